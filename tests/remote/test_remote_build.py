"""`avpea shards build ... --out s3://...` writes the same bytes as a local build; `shards upload`/`download` and
`inspect` through the command line."""

from __future__ import annotations

import boto3
import pytest

from avpea_dist import storage
from avpea_dist.cli import main
from avpea_dist.data.manifest import read_manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def raw_ave(tmp_path_factory):
    from avpea_dist.datasets.ave.synth import make_dataset

    root = tmp_path_factory.mktemp("raw") / "ave"
    make_dataset(root, 16, seed=3, num_classes=4)
    return root


def _objects(url: str) -> dict[str, bytes]:
    return {name: storage.read_bytes(storage.join(url, name)) for name in storage.listdir_recursive(url)}


def test_build_straight_to_s3_equals_a_local_build(s3, raw_ave, tmp_path, capsys):
    common = ["shards", "build", "ave", "--root", str(raw_ave), "--workers", "1", "--shard-size", "4"]
    assert main(common + ["--out", str(tmp_path / "local")]) == 0
    url = f"{s3}/built"
    assert main(common + ["--out", url, "--stage", str(tmp_path / "stage")]) == 0
    out = capsys.readouterr().out
    assert f"then uploading to {url}" in out and f"shards in {url}" in out
    remote = _objects(url)
    root = tmp_path / "local"
    local = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
             if p.is_file() and p.relative_to(root).parts[0] != "parts"}  # the build's own records stay local
    assert {"manifest.json", "index.json", "index/train.npz"} <= set(local)
    assert set(remote) == set(local) and remote == local  # shards, manifest and index byte for byte
    assert read_manifest(url) == read_manifest(tmp_path / "local")

    # a rerun finds everything built and uploaded: nothing is sent again
    assert main(common + ["--out", url, "--stage", str(tmp_path / "stage")]) == 0
    assert "uploaded 0 shards" in capsys.readouterr().out

    assert main(["shards", "inspect", url]) == 0
    assert f"shards   {url}" in capsys.readouterr().out
    assert main(["shards", "download", url, str(tmp_path / "copy")]) == 0
    assert main(["shards", "verify", str(tmp_path / "copy")]) == 0


def test_upload_refuses_http_and_secrets_and_a_damaged_folder(s3, raw_ave, tmp_path, capsys):
    assert main(["shards", "build", "ave", "--root", str(raw_ave), "--workers", "1", "--shard-size", "8",
                 "--out", str(tmp_path / "set")]) == 0
    assert main(["shards", "upload", str(tmp_path / "set"), "http://127.0.0.1:9/x"]) == 2
    assert "uploads go to s3://" in capsys.readouterr().err
    assert main(["shards", "upload", str(tmp_path / "set"), "s3://k:secret@bucket/x"]) == 2
    err = capsys.readouterr().err
    assert "carries credentials" in err and "secret" not in err
    shard = sorted((tmp_path / "set").glob("train-*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[-2000] ^= 1
    shard.write_bytes(bytes(data))
    assert main(["shards", "upload", str(tmp_path / "set"), f"{s3}/x"]) == 2
    assert "differs from its manifest entry" in capsys.readouterr().err
    assert not storage.exists(f"{s3}/x/manifest.json")
    client = boto3.client("s3", endpoint_url=storage.filesystem(s3).endpoint_url)
    assert client.list_objects_v2(Bucket=s3[5:], Prefix="x/").get("KeyCount", 0) == 0
