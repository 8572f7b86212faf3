"""The readers' compact index (data/index.py): written last by a finished build, byte ranges that hold exactly
one sample, labels in CSR, loaded once per process, refused when stale, old folders read from the manifest."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from avpea_dist.data import index as index_mod
from avpea_dist.data import parts
from avpea_dist.data.index import INDEX, load_index, tar_layout
from avpea_dist.data.manifest import read_manifest

from .toyrelease import PAYLOAD, ToyRelease, build, no_decoding  # noqa: F401  (fixture)

SIZES = {"train": 10, "val": 4}


def _keys(path: Path) -> list[str]:
    return tar_layout(path)[0]


def test_build_writes_index_last_with_exact_sample_spans(tmp_path: Path, no_decoding, monkeypatch) -> None:
    order: list[str] = []
    real_json, real_npz = parts.atomic_write_json, index_mod._write_npz
    monkeypatch.setattr(parts, "atomic_write_json", lambda p, obj: (order.append(Path(p).name), real_json(p, obj)))
    monkeypatch.setattr(index_mod, "_write_npz", lambda p, a: (order.append(Path(p).name), real_npz(p, a)))
    out = tmp_path / "shards"
    release = ToyRelease(SIZES, bad=(4,))
    manifest = build(out, release)["manifest"]
    assert order[-4:] == ["train.npz", "val.npz", "manifest.json", "index.json"]
    head = json.loads((out / INDEX).read_text())
    assert head["format"] == "avpea-index" and head["schema"] == "clips" and head["classes"] == manifest["classes"]
    assert head["splits"]["train"] == {**head["splits"]["train"], "samples": 9, "shards": 4,
                                       "file": "index/train.npz"}
    assert "offsets" not in json.dumps(manifest["build"])  # the index's fields stay out of the manifest
    labels_of = {t.key: t.labels for samples in release.splits.values() for t in samples}
    for split, s in manifest["splits"].items():
        idx = load_index(out, split)
        assert idx.files == [sh["file"] for sh in s["shards"]] and idx.counts.tolist() == [
            sh["samples"] for sh in s["shards"]]
        assert idx.sha256 == [sh["sha256"] for sh in s["shards"]] and idx.bytes.tolist() == [
            sh["bytes"] for sh in s["shards"]]
        keys = [k for f in idx.files for k in _keys(out / f)]  # manifest order
        assert len(keys) == idx.samples == s["samples"] and idx.starts.tolist() == np.cumsum(
            [0] + idx.counts.tolist()[:-1]).tolist()
        for shard, f in enumerate(idx.files):
            data = (out / f).read_bytes()
            for pos in range(idx.counts[shard]):
                a, b = idx.span(shard, pos)
                with tarfile.open(fileobj=io.BytesIO(data[a:b])) as tar:
                    names = tar.getnames()
                key = keys[idx.starts[shard] + pos]
                assert names == [f"{key}.{m}" for m in (*PAYLOAD, "json")]
            assert idx.span(shard, idx.counts[shard] - 1)[1] == idx.data_end[shard] < len(data)
            with pytest.raises(IndexError):
                idx.span(shard, int(idx.counts[shard]))
        assert [idx.labels.of(i).tolist() for i in range(idx.samples)] == [list(labels_of[k]) for k in keys]
        assert idx.url(0) == str(out / idx.files[0])


def test_loaded_once_per_process_until_rewritten(tmp_path: Path, no_decoding) -> None:
    out = tmp_path / "shards"
    build(out, ToyRelease(SIZES))
    first = load_index(out, "train")
    assert load_index(out, "train") is first and load_index(str(out), "train") is first
    (out / INDEX).write_text((out / INDEX).read_text() + " ")  # a rewritten index is read again
    assert load_index(out, "train") is not first


def test_stale_or_broken_index_is_refused_with_the_fix(tmp_path: Path, no_decoding) -> None:
    out = tmp_path / "shards"
    build(out, ToyRelease(SIZES))
    npz = out / "index" / "train.npz"
    good = npz.read_bytes()
    npz.write_bytes(good + b"\0")
    with pytest.raises(ValueError, match=r"train.npz: does not match its size in index.json .*rerun "
                                         r"the same `avpea shards build`"):
        load_index(out, "train")
    at = good.index(b"offsets.npy") + 200  # inside the offsets array's bytes: same size, the CRC-32 says so
    npz.write_bytes(good[:at] + bytes([good[at] ^ 1]) + good[at + 1:])
    with pytest.raises(ValueError, match=r"train.npz: unreadable \(Bad CRC-32"):
        load_index(out, "train")
    from avpea_dist.data.verify import verify

    assert any("train.npz: sha256 differs from index.json" in f for f in verify(out)[0])
    npz.write_bytes(good)
    with pytest.raises(ValueError, match="split 'test' has no shards \\(splits with shards: train, val\\)"):
        load_index(out, "test")
    head = json.loads((out / INDEX).read_text())
    (out / INDEX).write_text(json.dumps({**head, "version": 9}))
    with pytest.raises(ValueError, match="index version 9"):
        load_index(out, "train")
    # The same build command rewrites it (every shard reused, nothing decoded).
    r = build(out, ToyRelease(SIZES))
    assert r["stats"]["built_shards"] == 0 and load_index(out, "train").samples == 10


def test_folder_without_index_reads_the_manifest(tmp_path: Path, no_decoding) -> None:
    out = tmp_path / "shards"
    build(out, ToyRelease(SIZES))
    with_index = load_index(out, "train")
    (out / INDEX).unlink()
    old = load_index(out, "train")
    assert old.offsets is None and old.labels is None and old.span(0, 0) is None
    assert (old.files, old.counts.tolist(), old.sha256) == (with_index.files, with_index.counts.tolist(),
                                                           with_index.sha256)
    assert old.header["format"] == "avpea-shards"


def test_a_build_that_rebuilds_shards_withdraws_the_index_first(tmp_path: Path, no_decoding, monkeypatch) -> None:
    out = tmp_path / "shards"
    build(out, ToyRelease(SIZES))
    (out / "train-000001.tar").unlink()

    def crash(paths, opts):
        raise RuntimeError("killed")
        yield

    monkeypatch.setattr("avpea_dist.data.sharding.ordered_results", crash)
    with pytest.raises(RuntimeError):
        build(out, ToyRelease(SIZES))
    assert not (out / INDEX).exists()
    with pytest.raises(ValueError, match="unfinished build"):
        read_manifest(out)
    from .toyrelease import fake_results

    monkeypatch.setattr("avpea_dist.data.sharding.ordered_results", fake_results)
    assert build(out, ToyRelease(SIZES))["stats"]["built_shards"] == 1 and (out / INDEX).is_file()


def test_resumed_older_build_still_gets_offsets_and_labels(tmp_path: Path, no_decoding, monkeypatch) -> None:
    """Shards recorded before offsets and labels were: a rerun reads them from the tar headers (no decoding)."""
    out = tmp_path / "shards"
    build(out, ToyRelease(SIZES))
    want = {s: load_index(out, s) for s in SIZES}
    for part in (out / "parts").iterdir():
        _strip_index_fields(part)
    (out / INDEX).unlink()
    monkeypatch.setattr("avpea_dist.data.sharding.ordered_results", lambda paths, opts: pytest.fail("decoded"))
    assert build(out, ToyRelease(SIZES))["stats"]["built_shards"] == 0
    for split, idx in want.items():
        got = load_index(out, split)
        assert got.offsets.tolist() == idx.offsets.tolist() and got.data_end.tolist() == idx.data_end.tolist()
        assert got.labels.ids.tolist() == idx.labels.ids.tolist()


def test_older_record_whose_tar_no_longer_reads_is_rebuilt(tmp_path: Path, no_decoding) -> None:
    out = tmp_path / "shards"
    build(out, ToyRelease(SIZES))
    for part in (out / "parts").iterdir():
        _strip_index_fields(part)
    bad = out / "train-000002.tar"
    data = bytearray(bad.read_bytes())
    data[0:100] = b"\xff" * 100  # the first header: same size, unreadable
    bad.write_bytes(bytes(data))
    r = build(out, ToyRelease(SIZES))
    assert (r["stats"]["built_shards"], r["stats"]["changed_shards"]) == (1, 0)
    assert load_index(out, "train").span(2, 0)[0] == 0


def _strip_index_fields(part: Path) -> None:
    """Remove the index's fields from every record of a progress file (one JSON line per record)."""
    try:  # one JSON document (task-*.json) ...
        doc = json.loads(part.read_text())
        for rec in doc["build"]["done"].values():
            for k in index_mod.RECORD_KEYS:
                rec.pop(k, None)
        part.write_text(json.dumps(doc))
        return
    except ValueError:
        pass
    out = []  # ... or one line per record (task-*.jsonl)
    for line in part.read_text().splitlines():
        rec = json.loads(line)
        for k in index_mod.RECORD_KEYS:
            rec.get("record", {}).pop(k, None)
        out.append(json.dumps(rec))
    part.write_text("\n".join(out) + "\n")


def test_split_stream_takes_the_index(synth_shards: Path, tmp_path: Path) -> None:
    import shutil

    from avpea_dist.data.stream import EvalStream
    from avpea_dist.tasks.avel.codec import AVELCodec

    def SplitStream(root, split, img_size, codec):  # the base's __init__, through its simplest subclass
        return EvalStream(root, split, batch_size=2, img_size=img_size, rank=0, world_size=1, codec=codec)

    s = SplitStream(synth_shards, "train", 32, AVELCodec(9))
    idx = load_index(synth_shards, "train")
    assert s.files == [str(synth_shards / f) for f in idx.files] and s.counts == idx.counts.tolist()
    assert s.span_of(1, 2) == idx.span(1, 2) and s.frame_size == read_manifest(synth_shards)["preprocessing"][
        "frame_size"]
    old = tmp_path / "old"
    shutil.copytree(synth_shards, old)
    (old / INDEX).unlink()
    assert SplitStream(old, "train", 32, AVELCodec(9)).span_of(1, 2) is None


# ---------------------------------------------------------------------------------------------
# Bookkeeping that stays linear at 2M records (issue 25)


def test_progress_records_are_appended_never_rewritten(tmp_path: Path, no_decoding, monkeypatch) -> None:
    out = tmp_path / "shards"
    rewrites: list[str] = []
    real = parts.atomic_write_text
    monkeypatch.setattr(parts, "atomic_write_text", lambda p, t: (rewrites.append(Path(p).name), real(p, t)))
    build(out, ToyRelease({"train": 20}), shard_size=2)
    part = parts.part_path(out, 0, 1)
    assert rewrites == [part.name]  # written whole once, when the task starts
    lines = [json.loads(x) for x in part.read_text().splitlines()]
    assert lines[0] == {"task": 0, "tasks": 1, "run": None, "fingerprint": lines[0]["fingerprint"]}
    assert [x["shard"] for x in lines[1:-1]] == [f"train-{i:06d}" for i in range(10)] and lines[-1] == {
        "finished": True}


def test_restart_trusts_size_and_recorded_hash(tmp_path: Path, no_decoding, monkeypatch) -> None:
    from avpea_dist.data import sharding
    from avpea_dist.data.verify import verify

    out = tmp_path / "shards"
    build(out, ToyRelease({"train": 12}), shard_size=3)
    flipped = out / "train-000001.tar"
    data = bytearray(flipped.read_bytes())
    data[600] ^= 1  # same size: trusted by a restart (no re-hash) ...
    flipped.write_bytes(bytes(data))
    cut = out / "train-000002.tar"
    cut.write_bytes(cut.read_bytes()[:-512])  # ... another size: rebuilt
    hashed: list[str] = []
    real = sharding.sha256_file
    monkeypatch.setattr(sharding, "sha256_file", lambda p: (hashed.append(Path(p).name), real(p))[1])
    r = build(out, ToyRelease({"train": 12}), shard_size=3)
    assert (r["stats"]["built_shards"], r["stats"]["reused_shards"]) == (1, 3) and hashed == [cut.name]
    faults, _ = verify(out)  # the full check finds what the restart trusted
    assert faults == [f"{flipped}: sha256 differs from the manifest (changed or truncated)"]


def test_a_line_cut_short_by_a_kill_is_ignored(tmp_path: Path, no_decoding) -> None:
    out = tmp_path / "shards"
    build(out, ToyRelease({"train": 9}), shard_size=3)
    part = parts.part_path(out, 0, 1)
    lines = part.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:3]) + lines[3][:40])  # two records kept, the third cut mid-line
    (out / "manifest.json").unlink()
    assert sorted(parts.read_part(part)["build"]["done"]) == ["train-000000", "train-000001"]
    assert build(out, ToyRelease({"train": 9}), shard_size=3)["stats"]["built_shards"] == 1
    part.write_text("".join(lines[:2]) + "{oops\n" + "".join(lines[2:]))
    with pytest.raises(ValueError, match=r"task-0000-of-0001.jsonl, line 3 is not valid JSON .*delete the file"):
        parts.read_part(part)


def test_fingerprint_streams_files_and_options(tmp_path: Path) -> None:
    from avpea_dist.data.plan import fingerprint_inputs

    a = tmp_path / "a.csv"
    a.write_bytes(b"x" * (3 << 20))  # over several read blocks
    fp = fingerprint_inputs([a], {"k": 1}, [{"skip": 1}])
    assert fp == fingerprint_inputs([a], {"k": 1}, [{"skip": 1}]) and len(fp) == 16
    assert fp != fingerprint_inputs([a], {"k": 2}, [{"skip": 1}]) != fingerprint_inputs([a], {"k": 1})
    a.write_bytes(b"x" * ((3 << 20) - 1) + b"y")
    assert fp != fingerprint_inputs([a], {"k": 1}, [{"skip": 1}])


def _damaged(tmp_path: Path) -> Path:
    out = tmp_path / "shards"
    build(out, ToyRelease({"train": 30, "val": 6}, bad=(7,)), shard_size=3)
    cut = out / "train-000004.tar"
    cut.write_bytes(cut.read_bytes()[:1536])
    (out / "val-000001.tar").unlink()
    return out


def test_verify_progress_lines_without_a_terminal(tmp_path: Path, no_decoding, monkeypatch, capsys) -> None:
    from avpea_dist.data import verify as verify_mod

    out = _damaged(tmp_path)
    monkeypatch.setattr(verify_mod, "LOG_EVERY_S", 0.0)
    capsys.readouterr()
    faults, _ = verify_mod.verify(out, progress=True)
    assert f"{out / 'val-000001.tar'}: missing" in faults
    assert f"{out / 'train-000004.tar'}: 1536 bytes, manifest says {10240}" in faults
    log = capsys.readouterr().err.splitlines()  # not a terminal: log lines, the last one the total
    assert log[-1].startswith("verify: 12/12 shards (100.0 %)") and len(log) == 13
    with pytest.raises(ValueError, match="--workers 0"):
        verify_mod.verify(out, workers=0)


@pytest.mark.slow
def test_verify_workers_give_the_same_faults_in_the_same_order(tmp_path: Path, no_decoding) -> None:
    from avpea_dist.data.verify import verify

    out = _damaged(tmp_path)
    one = verify(out, workers=1)
    assert len(one[0]) >= 3 and verify(out, workers=3) == one


def test_readers_take_the_manifest_description_from_the_index(tmp_path: Path, no_decoding) -> None:
    """Ranks, tasks and run folders read the manifest's description from index.json (its lists as counts,
    the first skip, the data fingerprint): manifest.json, ~100 MB at 2M records, is not read by them."""
    from avpea_dist.data.manifest import describe, read_description, shards_fingerprint

    out = tmp_path / "shards"
    manifest = build(out, ToyRelease(SIZES, bad=(4,)))["manifest"]
    head = json.loads((out / INDEX).read_text())
    d = head["manifest"]
    assert d == describe(manifest) == describe(d) and "build" not in d
    assert d["splits"]["train"]["shards"] == len(manifest["splits"]["train"]["shards"]) == 4
    assert d["splits"]["train"]["skipped"] == 1 and d["splits"]["train"]["first_skip"]["key"]
    assert d["data_fingerprint"] == shards_fingerprint(manifest) and d["classes"] == manifest["classes"]
    (out / "manifest.json").write_text("not read by a reader")
    assert read_description(out) == d
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / INDEX).write_text(json.dumps({k: v for k, v in head.items() if k != "manifest"}))
    assert read_description(out) == d  # an index written before it carried the description
    (out / INDEX).unlink()  # a folder built before the index: described from its manifest
    assert read_description(out) == d
