"""Shard bytes from s3:// (moto on loopback) and http:// (a Range-honouring server on loopback): the readers, verify,
upload/download, the cache, and faults injected by a proxy between client and server."""

from __future__ import annotations

import hashlib
import shutil
import time

import boto3
import pytest

from avpea_dist import storage
from avpea_dist.data import remote, tario
from avpea_dist.data.manifest import read_manifest
from avpea_dist.data.verify import verify


def _shards(manifest):
    return [sh for s in manifest["splits"].values() for sh in s["shards"]]


def _keys(path, start, stop, count, sha=None, offset=0, end=None):
    out = list(tario.read_piece(path, start, stop, count, sha, offset, end=end))
    return [r.key for r in out[:-1]], [r.members for r in out[:-1]], out[-1]


@pytest.mark.slow
def test_a_small_object_survives_resets_and_throttling_and_a_stall_is_bounded(s3, moto, proxy_to, monkeypatch):
    import os

    client, bucket = _client(s3)
    data = os.urandom(200_000)
    client.put_object(Bucket=bucket, Key="x.bin", Body=data)
    proxy = proxy_to(moto)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    storage.configure(retries=3, backoff_s=0.01, timeout_s=2)
    proxy.arm("reset", 2)
    assert storage.read_range(f"{s3}/x.bin", 1000, 150_000) == data[1000:150_000]
    proxy.arm("503", 3)
    assert storage.read_range(f"{s3}/x.bin", 0, 10) == data[:10]
    assert proxy.faults == 5
    storage.configure(retries=1, timeout_s=0.5)
    proxy.arm("stall", 50)
    t0 = time.monotonic()
    with pytest.raises(storage.StorageError, match=f"read bytes 0-9 of {s3}/x.bin failed 2 times"):
        storage.read_range(f"{s3}/x.bin", 0, 10)
    assert time.monotonic() - t0 < 8


def test_http_pieces_fetch_exactly_their_bytes_and_a_reset_is_retried(http_server, proxy_to):
    with open(http_server.httpd.root / "a.tar", "wb") as f:
        w = tario.TarShardWriter(f)
        for i in range(6):
            w.write(f"k{i}", {"json": b"{}", "bin": bytes([i]) * (3000 + i)})
        w.close()
    local = str(http_server.httpd.root / "a.tar")
    offsets = tario.sample_offsets(local, 6)
    proxy = proxy_to(http_server.port)
    storage.configure(retries=2, backoff_s=0.01, timeout_s=5)
    proxy.arm("reset", 1)
    url = f"{proxy.url}/a.tar"
    before = tario.bytes_fetched()
    out = list(tario.read_piece(url, 2, 4, 6, None, offsets[2], end=offsets[4]))
    assert [r.key for r in out[:-1]] == ["k2", "k3"] and out[-1].missing == 0
    assert out[0].members["bin"] == bytes([2]) * 3002
    assert tario.bytes_fetched() - before == offsets[4] - offsets[2] and proxy.faults == 1
    with pytest.raises(FileNotFoundError):
        storage.size(f"{http_server.url}/nope.tar")


@pytest.fixture
def s3_set(s3, synth_shards):
    url = f"{s3}/sets/ave"
    remote.upload(synth_shards, url)
    return url


@pytest.fixture
def http_set(http_server, synth_shards):
    shutil.copytree(synth_shards, http_server.httpd.root / "ave")
    return f"{http_server.url}/ave"


def _client(s3_url):
    import os

    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]), s3_url.split("/")[2]


def test_redact_hides_passwords_and_tokens():
    assert storage.redact("https://bob:hunter2@h.example/x?X-Amz-Signature=abc&v=1") == \
        "https://***@h.example/x?X-Amz-Signature=***&v=1"
    assert storage.redact("s3://bucket/prefix") == "s3://bucket/prefix"
    with pytest.raises(ValueError, match="carries credentials"):
        storage.check_secret_free("https://u:p@h/x", "data.shards")
    assert storage.join("s3://b/p/", "a.tar") == "s3://b/p/a.tar"


@pytest.mark.slow
@pytest.mark.slow
@pytest.mark.parametrize("where", ["s3", "http"])
def test_pieces_and_whole_shards_read_the_same_samples_as_local(where, request, synth_shards):
    url = request.getfixturevalue(f"{where}_set")
    m = read_manifest(url)
    assert m == read_manifest(synth_shards)
    sh = _shards(m)[0]
    local = str(synth_shards / sh["file"])
    whole = _keys(storage.join(url, sh["file"]), 0, sh["samples"], sh["samples"], sh["sha256"])
    assert whole[:2] == _keys(local, 0, sh["samples"], sh["samples"], sh["sha256"])[:2]
    assert whole[2].missing == 0 and whole[2].problem is None  # hashed while streaming, matches
    offsets = tario.sample_offsets(local, sh["samples"])  # a mid-shard piece, fetched as exactly its bytes
    assert tario.sample_offsets(storage.join(url, sh["file"]), sh["samples"]) == offsets
    before = tario.bytes_fetched()
    piece = _keys(storage.join(url, sh["file"]), 2, 5, sh["samples"], None, offsets[2], end=offsets[5])
    assert tario.bytes_fetched() - before == offsets[5] - offsets[2]
    assert piece[:2] == _keys(local, 2, 5, sh["samples"], None, offsets[2])[:2]
    before = tario.bytes_fetched()  # no end given: the header walk above bounds the piece all the same
    assert _keys(storage.join(url, sh["file"]), 5, 7, sh["samples"], None, offsets[5])[0] == \
        _keys(local, 5, 7, sh["samples"], None, offsets[5])[0]
    assert tario.bytes_fetched() - before == offsets[7] - offsets[5]


@pytest.mark.slow
@pytest.mark.parametrize("where", ["s3", "http"])
def test_verify_from_both_servers_and_a_flipped_byte_is_found(where, request, synth_shards, capsys):
    from avpea_dist.cli import main

    url = request.getfixturevalue(f"{where}_set")
    assert main(["shards", "verify", url]) == 0
    assert "OK" in capsys.readouterr().out
    name = _shards(read_manifest(synth_shards))[1]["file"]
    data = bytearray((synth_shards / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    if where == "s3":
        client, bucket = _client(url)
        client.put_object(Bucket=bucket, Key=f"sets/ave/{name}", Body=bytes(data))
    else:
        (request.getfixturevalue("http_server").httpd.root / "ave" / name).write_bytes(bytes(data))
    faults, _ = verify(url)
    assert any(name in f and "sha256" in f for f in faults), faults
    sh = _shards(read_manifest(url))[1]
    end = list(tario.read_piece(storage.join(url, name), 0, sh["samples"], sh["samples"], sh["sha256"]))[-1]
    assert end.problem and "sha256 mismatch" in end.problem


@pytest.mark.slow
def test_vanished_object_is_counted_not_raised(s3_set):
    client, bucket = _client(s3_set)
    sh = _shards(read_manifest(s3_set))[0]
    client.delete_object(Bucket=bucket, Key=f"sets/ave/{sh['file']}")
    end = list(tario.read_piece(storage.join(s3_set, sh["file"]), 0, sh["samples"], sh["samples"], sh["sha256"]))
    assert len(end) == 1 and end[0].missing == sh["samples"] and sh["file"] in end[0].problem
    faults, _ = verify(s3_set)
    assert f"{s3_set}/{sh['file']}: missing" in faults


@pytest.mark.slow
def test_upload_interrupted_then_resumed_uploads_only_what_is_missing(s3, synth_shards, monkeypatch):
    url = f"{s3}/resumed"
    shards = _shards(read_manifest(synth_shards))
    real, calls = storage.put_file, []

    def dies_at_third(local, target, metadata=None):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")  # the process dies between two uploads
        calls.append(target)
        real(local, target, metadata)

    monkeypatch.setattr(storage, "put_file", dies_at_third)
    with pytest.raises(KeyboardInterrupt):
        remote.upload(synth_shards, url)
    monkeypatch.setattr(storage, "put_file", real)
    assert not storage.exists(f"{url}/manifest.json")  # a reader sees no build yet
    with pytest.raises(FileNotFoundError, match="holds no built shards"):
        read_manifest(url)
    stats = remote.upload(synth_shards, url)
    assert stats == {"uploaded": len(shards) - 2, "skipped": 2, "bytes": sum(s["bytes"] for s in shards[2:])}
    assert verify(url) == ([], [])


@pytest.mark.slow
def test_download_verifies_and_refuses_a_changed_shard(s3_set, synth_shards, tmp_path):
    st = remote.download(s3_set, tmp_path / "copy")
    assert st["downloaded"] == len(_shards(read_manifest(synth_shards)))
    for sh in _shards(read_manifest(synth_shards)):
        assert (tmp_path / "copy" / sh["file"]).read_bytes() == (synth_shards / sh["file"]).read_bytes()
    assert verify(tmp_path / "copy")[0] == []
    assert remote.download(s3_set, tmp_path / "copy")["downloaded"] == 0  # a rerun fetches nothing
    client, bucket = _client(s3_set)
    name = _shards(read_manifest(synth_shards))[0]["file"]
    client.put_object(Bucket=bucket, Key=f"sets/ave/{name}", Body=b"x" * 1024)
    with pytest.raises(ValueError, match="sha256 differs"):
        remote.download(s3_set, tmp_path / "other")
    assert not (tmp_path / "other" / name).exists()


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["reset", "503"])
def test_transient_faults_are_retried_and_every_sample_arrives(fault, s3_set, moto, proxy_to, monkeypatch,
                                                               synth_shards):
    proxy = proxy_to(moto)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    storage.configure(retries=4, backoff_s=0.01, timeout_s=5)
    sh = _shards(read_manifest(synth_shards))[0]
    proxy.arm(fault, 3)
    keys, members, end = _keys(storage.join(s3_set, sh["file"]), 0, sh["samples"], sh["samples"], sh["sha256"])
    assert end.problem is None and len(keys) == sh["samples"]
    assert keys == _keys(str(synth_shards / sh["file"]), 0, sh["samples"], sh["samples"])[0]
    assert proxy.faults == 3


@pytest.mark.slow
def test_a_stalled_store_stops_with_the_named_error_within_the_bound(s3_set, moto, proxy_to, monkeypatch):
    proxy = proxy_to(moto)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    storage.configure(retries=1, backoff_s=0.01, timeout_s=1)
    name = _shards(read_manifest(s3_set))[0]["file"]
    proxy.arm("stall", 100)
    t0 = time.monotonic()
    with pytest.raises(storage.StorageError, match=f"{s3_set}/{name} failed 2 times") as e:
        list(tario.read_piece(storage.join(s3_set, name), 0, 1, 8, None, 0, end=4096))
    assert time.monotonic() - t0 < 15
    assert "timeout 1 s" in str(e.value)


@pytest.mark.slow
def test_http_faults_and_a_server_ignoring_range(http_set, http_server, proxy_to, synth_shards):
    proxy = proxy_to(http_server.port)
    storage.configure(retries=3, backoff_s=0.01, timeout_s=5)
    sh = _shards(read_manifest(synth_shards))[0]
    url = f"{proxy.url}/ave/{sh['file']}"
    proxy.arm("reset", 2)
    keys, _, end = _keys(url, 0, sh["samples"], sh["samples"], sh["sha256"])
    assert end.problem is None and len(keys) == sh["samples"]
    storage.configure(retries=0)
    proxy.arm("stall", 5)
    storage.configure(retries=0, timeout_s=1)
    with pytest.raises(storage.StorageError, match="failed 1 times"):
        storage.read_range(url, 0, 100)


@pytest.mark.slow
def test_cache_serves_later_reads_locally_and_evicts_least_recently_used(s3_set, tmp_path, synth_shards):
    shards = _shards(read_manifest(synth_shards))
    bound = 2 * max(sh["bytes"] for sh in shards[:3])  # room for two shards, not three
    assert 3 * min(sh["bytes"] for sh in shards[:3]) > bound
    storage.configure(cache_dir=str(tmp_path / "cache"), cache_bytes=bound)
    urls = [storage.join(s3_set, sh["file"]) for sh in shards[:3]]
    before = tario.bytes_fetched()
    for url, sh in zip(urls[:2], shards):
        assert _keys(url, 0, sh["samples"], sh["samples"], sh["sha256"])[2].problem is None
    fetched = tario.bytes_fetched() - before
    assert fetched == shards[0]["bytes"] + shards[1]["bytes"]
    for url, sh in zip(urls[:2], shards):  # second epoch: from the cache, nothing fetched
        assert _keys(url, 1, 3, sh["samples"])[0]
    assert tario.bytes_fetched() - before == fetched
    time.sleep(0.01)
    _keys(urls[2], 0, 1, shards[2]["samples"])  # a third shard: the least recently used one goes
    names = sorted(p.name for p in (tmp_path / "cache").iterdir() if p.name.endswith(".tar"))
    assert len(names) == 2 and not any(n.endswith(shards[0]["file"]) for n in names), names


@pytest.mark.slow
def test_cache_is_shared_by_processes_and_fetched_once(s3_set, tmp_path, synth_shards):
    import multiprocessing as mp

    sh = _shards(read_manifest(synth_shards))[0]
    storage.configure(cache_dir=str(tmp_path / "cache"))
    url = storage.join(s3_set, sh["file"])
    ctx = mp.get_context("fork")
    with ctx.Pool(3) as pool:
        fetched = pool.map(_read_whole_and_count, [(url, sh["samples"], sh["sha256"])] * 3)
    assert sorted(fetched) == [0, 0, sh["bytes"]]  # one process downloaded it, the others waited for it
    (entry,) = [p for p in (tmp_path / "cache").iterdir() if p.name.endswith(".tar")]
    assert hashlib.sha256(entry.read_bytes()).hexdigest() == sh["sha256"]


def _read_whole_and_count(arg):
    url, count, sha = arg
    before = tario.bytes_fetched()
    end = list(tario.read_piece(url, 0, count, count, sha))[-1]
    assert end.problem is None
    return tario.bytes_fetched() - before


def test_signed_reads_match_s3fs_and_never_show_the_signature(s3, moto, proxy_to, monkeypatch):
    """S3 ranges are read by presigned GETs (storage.read_range): the same bytes as through s3fs; a 503 is
    retried; a refused signature (403) falls back to s3fs; a vanished object names the s3:// URL only."""
    import os

    client, bucket = _client(s3)
    data = os.urandom(100_000)
    client.put_object(Bucket=bucket, Key="x.bin", Body=data)
    url = f"{s3}/x.bin"
    storage.configure(signed_reads=False)
    assert storage.read_range(url, 10, 90_000) == data[10:90_000] and not storage._SIGNED
    proxy = proxy_to(moto)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    storage.configure(retries=3, backoff_s=0.01, timeout_s=5, signed_reads=True)
    proxy.arm("503", 2)
    assert storage.read_range(url, 10, 90_000) == data[10:90_000] and proxy.faults == 2
    (key, (signed, _)), = storage._SIGNED.items()
    assert key[1] == url and "Signature" in signed and signed.startswith(proxy.url)
    proxy.arm("403", 1)  # the store refuses the signature (expired, or the credentials changed)
    assert storage.read_range(url, 0, 50) == data[:50]  # read through s3fs instead
    assert key not in storage._SIGNED and proxy.faults == 3
    client.delete_object(Bucket=bucket, Key="x.bin")
    with pytest.raises(FileNotFoundError) as e:
        storage.read_range(url, 0, 50)
    assert url in str(e.value) and "Signature" not in str(e.value) and "testing" not in str(e.value)
