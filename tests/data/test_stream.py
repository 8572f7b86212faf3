"""The loaders' contract on real shards: exact batch counts, determinism, exact resume, corrupt samples
skipped and counted, train samples seen at most once per epoch and eval samples exactly once across 2 real
(gloo) ranks, and `shards verify`."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from avpea_dist.data.features import npy_bytes
from avpea_dist.data.loaders import make_eval_loader, make_train_loader
from avpea_dist.data.manifest import default_epoch_batches, read_manifest
from avpea_dist.data.tario import iter_raw_samples
from avpea_dist.tasks.avel.codec import AVELCodec

from .corrupt import copy_shards, cut_at_member, cut_mid_member, reseal, rewrite_shard
from .test_build import avpea

KW = dict(batch_size=4, img_size=32, shuffle_buffer=16, seed=1, world_size=1)


def avel(shards: Path) -> AVELCodec:
    """The codec an AVEL run reads these shards with: labels below the manifest's class count."""
    return AVELCodec(len(read_manifest(shards)["classes"]))


def _train(shards: Path, **kw) -> list[dict]:
    args = {**KW, "num_workers": 0, "rank": 0, "epoch": 0, "epoch_batches": 7, **kw}
    loader = make_train_loader(shards, codec=avel(shards), **args)
    batches = list(loader)
    assert len(batches) == len(loader) == args["epoch_batches"] - args.get("start_batch", 0)
    return batches


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x["key"] == y["key"] and x["skipped"] == y["skipped"] and
                                    x["problems"] == y["problems"] and
                                    all(torch.equal(x[k], y[k]) for k in ("frames", "audio", "labels"))
                                    for x, y in zip(a, b))


def _split_keys(shards: Path, split: str) -> list[str]:
    m = read_manifest(shards)
    return [r.key for sh in m["splits"][split]["shards"] for r in iter_raw_samples(shards / sh["file"]) if not r.error]


@pytest.mark.parametrize("workers", [0, 2])
def test_train_exact_deterministic_and_resumable(synth_shards: Path, workers: int) -> None:
    a = _train(synth_shards, num_workers=workers)
    b = a[0]
    assert b["frames"].shape == (4, 10, 3, 32, 32) and b["frames"].dtype == torch.uint8
    assert b["audio"].shape == (4, 10, 128, 102) and b["audio"].dtype == torch.float32
    assert b["labels"].shape == (4, 10) and b["labels"].dtype == torch.int64 and b["labels"].max() < 9
    assert -5 < float(b["audio"].min()) and float(b["audio"].max()) < 5  # normalised log-mel
    keys = [k for x in a for k in x["key"]]
    assert all(x["skipped"] == 0 and x["problems"] == [] for x in a)  # partly read shards raise no false alarm
    assert len(keys) == len(set(keys)) == 28  # 7 batches of 4 from 34 samples: no repeats within an epoch
    assert _same(a, _train(synth_shards, num_workers=workers))  # a pure function of its arguments
    assert _same(a[3:], _train(synth_shards, num_workers=workers, start_batch=3))  # exact mid-epoch resume
    if workers == 2:  # the worker count changes the batches, not the rank's samples of the epoch
        assert sorted(keys) == sorted(k for x in _train(synth_shards, num_workers=0) for k in x["key"])
    if workers == 0:
        assert not _same(a, _train(synth_shards, epoch=1))
        assert not _same(a, _train(synth_shards, rank=1, world_size=2))
        full = _train(synth_shards, img_size=224, epoch_batches=1)[0]["frames"]
        assert full.shape == (4, 10, 3, 224, 224)


def test_corrupt_samples_are_skipped_counted_and_replaced_exactly(synth_shards: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    shards = copy_shards(synth_shards, tmp_path / "s")

    def damage(i: int, raw) -> list[tuple[str, bytes]]:
        members = dict(raw.members)
        if i == 0:
            members["f3.jpg"] = b"\xff\xd8\xff\xe0 not really a jpeg"
        if i == 1:
            members["pyd"] = b"cos\nsystem\n(S'echo pwned'\ntR."  # a pickle that would run a command
        if i == 2:
            return list(members.items()) + [("json", members["json"])]  # duplicate member
        if i == 3:
            members["fbank.npy"] = npy_bytes(np.zeros((10, 64, 102), np.float16))
        if i == 4:
            members["json"] = json.dumps({**json.loads(members["json"]), "labels": [99] * 10}).encode()
        if i == 5:
            del members["f9.jpg"]
        return list(members.items())

    rewrite_shard(shards, "train-000000.tar", damage)
    cut_mid_member(shards / "train-000001.tar", 12 * 5 + 4)  # sample 5 of shard 1 cut inside a member
    reseal(shards, "train-000001.tar")
    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail(f"the loader slept {s} s"))
    a = _train(shards, epoch_batches=12)
    skipped = sum(x["skipped"] for x in a)
    assert skipped >= 3 and all(x["labels"].max() < 9 and len(x["key"]) == 4 for x in a)
    assert _same(a, _train(shards, epoch_batches=12))
    assert _same(a[5:], _train(shards, epoch_batches=12, start_batch=5))
    # Eval: every readable sample once, every other one counted.
    shard0, shard1 = ([r.key for r in iter_raw_samples(synth_shards / f"train-00000{i}.tar")] for i in (0, 1))
    good = set(_split_keys(synth_shards, "train")) - set(shard0[:6]) - set(shard1[5:])
    seen, skip = [], 0
    for rank in range(2):
        for batch in make_eval_loader(shards, "train", codec=avel(shards), batch_size=3, img_size=32, num_workers=0,
                                      rank=rank, world_size=2):
            seen += batch["key"]
            skip += batch["skipped"]
    assert len(seen) == len(set(seen)) and set(seen) == good and len(seen) + skip == 34
    assert skip == 6 + 3  # six damaged samples in shard 0; samples 5, 6, 7 of shard 1 are gone


def _rank_main(rank: int, shards: str, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        m = read_manifest(shards)
        n = default_epoch_batches(m, "train", 4, 2)
        codec = avel(shards)
        train = [b["key"] for b in make_train_loader(shards, codec=codec, batch_size=4, img_size=32, num_workers=rank,
                                                     shuffle_buffer=8, seed=0, rank=rank, world_size=2, epoch=0,
                                                     epoch_batches=n)]
        keys = {}
        for split in ("val", "test"):
            keys[split] = [k for b in make_eval_loader(shards, split, codec=codec, batch_size=2, img_size=32,
                                                       num_workers=rank, rank=rank, world_size=2) for k in b["key"]]
        gathered: list = [None, None]
        dist.all_gather_object(gathered, {"train": train, "n": n, "keys": keys})
        if rank == 0:
            Path(out).write_text(json.dumps(gathered))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
def test_two_real_ranks_same_train_batches_eval_exactly_once(synth_shards: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = tmp_path / "ranks.json"
    procs = [ctx.Process(target=_rank_main, args=(r, str(synth_shards), port, str(out))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    r0, r1 = json.loads(out.read_text())
    assert len(r0["train"]) == len(r1["train"]) == r0["n"] == 34 // 8  # rank 0 with 0 workers, rank 1 with 1
    train = [k for b in r0["train"] + r1["train"] for k in b]
    assert all(len(b) == 4 for b in r0["train"] + r1["train"])
    assert len(set(train)) == len(train) == 32 and set(train) <= set(_split_keys(synth_shards, "train"))
    for split in ("val", "test"):
        both = r0["keys"][split] + r1["keys"][split]
        assert sorted(both) == sorted(_split_keys(synth_shards, split)) and len(both) == 7
        assert abs(len(r0["keys"][split]) - len(r1["keys"][split])) <= 1


def test_verify_catches_a_shard_cut_at_a_member_boundary(synth_shards: Path, tmp_path: Path) -> None:
    r = avpea("shards", "verify", str(synth_shards), "--decode")
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout
    shards = copy_shards(synth_shards, tmp_path / "s")
    cut_at_member(shards / "train-000002.tar", 12 * 3)
    raws = list(iter_raw_samples(shards / "train-000002.tar"))
    assert len(raws) == 3 and not any(x.error for x in raws)  # the tar alone looks fine
    r = avpea("shards", "verify", str(shards))
    assert r.returncode == 1
    assert "train-000002.tar: sha256 differs" in r.stdout and "3 readable samples, manifest says 8" in r.stdout
    cut_mid_member(shards / "val-000000.tar", 5)
    r = avpea("shards", "verify", str(shards))
    assert r.returncode == 1 and "truncated or unreadable shard val-000000.tar" in r.stdout


def test_inspect_and_manifest_errors(synth_shards: Path, tmp_path: Path) -> None:
    r = avpea("shards", "inspect", str(synth_shards))
    assert r.returncode == 0
    assert "train      34" in r.stdout and "val         7" in r.stdout and "background" in r.stdout
    assert "f0.jpg..f9.jpg" in r.stdout and "segments per class" in r.stdout
    m = read_manifest(synth_shards)
    assert len(m["classes"]) == 9 and sum(m["splits"]["train"]["segment_histogram"]) == 340
    r = avpea("shards", "inspect", str(tmp_path))
    assert r.returncode == 2 and "manifest.json not found" in r.stderr
    assert "rebuild them with `avpea shards build DATASET ... --out DIR`" in r.stderr  # the data layer names no dataset
    shards = copy_shards(synth_shards, tmp_path / "s")
    (shards / "manifest.json").write_text(json.dumps({**m, "complete": False}))
    with pytest.raises(ValueError, match="unfinished build; rerun"):
        read_manifest(shards)
    (shards / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_manifest(shards)
    (shards / "manifest.json").write_text(json.dumps(m))
    (shards / "test-000000.tar").unlink()
    kw = dict(batch_size=2, img_size=32, num_workers=0, rank=0, world_size=1)
    # A shard missing when read counts like any unreadable one (no per-epoch check of every file).
    batches = list(make_eval_loader(shards, "test", codec=AVELCodec(9), **kw))
    assert sum(b["skipped"] for b in batches) == m["splits"]["test"]["samples"]
    assert sum(len(b["key"]) for b in batches) == 0
    with pytest.raises(ValueError, match="split 'nope' has no shards"):
        make_eval_loader(shards, "nope", codec=AVELCodec(9), **kw)
    # The data layer has no default task: a run without its task's codec is told what to pass.
    with pytest.raises(TypeError, match=r"codec=None is not a SampleCodec .*codec=task.codec\(split, epoch\)"):
        make_eval_loader(shards, "val", codec=None, **kw)


_ORPHAN_SCRIPT = """
import sys, time
from avpea_dist.data.loaders import make_train_loader
from avpea_dist.tasks.avel.codec import AVELCodec
if __name__ == "__main__":
    loader = make_train_loader(sys.argv[1], codec=AVELCodec(9), batch_size=2, img_size=32, num_workers=2,
                               shuffle_buffer=4, seed=0, rank=0, world_size=1, epoch=0, epoch_batches=1000)
    it = iter(loader)
    next(it)
    print(" ".join(str(w.pid) for w in it._workers), flush=True)
    time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] in "ZX"
    except (FileNotFoundError, IndexError):
        return True


@pytest.mark.slow
def test_workers_exit_when_the_training_process_is_killed(synth_shards: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "orphan.py"
    script.write_text(_ORPHAN_SCRIPT)
    tree = str(Path(__file__).resolve().parents[2])  # the package under test, not whichever one is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tree, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, str(script), str(synth_shards)], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and not any(_gone(p) for p in pids)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # as an OOM killer or a preempting scheduler would
        proc.wait()
    deadline = time.time() + 20
    while time.time() < deadline and not all(_gone(p) for p in pids):
        time.sleep(0.2)
    assert all(_gone(p) for p in pids), "loader workers outlived the killed training process"
