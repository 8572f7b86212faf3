"""A checkpoint written at one world size and ZeRO stage resumes at another (real gloo ranks): the trainable
state comes back exactly (weights, AdamW moments and step, the schedule's position), and the steps after it
match the uninterrupted run's within float reduction-order tolerance.

The data here is the engine's alone: global batch g is one fixed set of GLOBAL clips (fake_batch seeded by
g), rank r of W takes its contiguous GLOBAL/W slice. So every world size trains on the same global batches
and only the order of float sums differs (the gradient all-reduce and the loss mean over ranks).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

import pytest
import torch

from trainkit import fake_batch, run_ranks, tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

GLOBAL = 6  # clips per optimizer step: every world size 1, 2, 3 divides it
SAVE_AT, STEPS = 2, 4
# Relative tolerance of a loss or weight after the resume: only the order of float additions differs
# (gloo's all-reduce over W ranks, the mean over W micro-batch means); fp32 sums of this size agree to
# ~1e-7 relative, and two Adam steps amplify that at most by the update's ratio to sqrt(v) (~1e-5).
RTOL = 1e-5
STATE_RTOL = 1e-3  # a whole tensor after two more steps; an adapter gate's gradient is a near-cancelling sum


def _slice(batch: dict, rank: int, world: int) -> dict:
    n = GLOBAL // world
    cut = slice(rank * n, (rank + 1) * n)
    return {k: (v[cut] if isinstance(v, (torch.Tensor, list)) else v) for k, v in batch.items()}


def _engine(world: int, stage: int):
    from avpea_dist.runtime import world as avdist
    from avpea_dist.train.checkpoint import install_checkpoint_engine
    from avpea_dist.train.engine import build_engine

    from trainkit import model_and_task

    avdist.init_process_group(avdist.world_info_from_env(), "gloo", 60)
    cfg = tiny_config(f"data.batch_size={GLOBAL // world}", f"dist.zero_stage={stage}", f"train.steps={STEPS}",
                      "optim.warmup_steps=1", "optim.lr_adapter=1e-2", "optim.lr_head=1e-2")
    torch.manual_seed(0)
    model, task = model_and_task(cfg)
    engine, sched = build_engine(model, cfg)
    install_checkpoint_engine(engine)
    return cfg, task, engine, sched


def _phase(rank: int, world: int, stage: int, root: str, resume: bool) -> dict:
    """Train to STEPS: from scratch (saving at SAVE_AT) or from the checkpoint at SAVE_AT."""
    from pathlib import Path

    from avpea_dist.runtime import world as avdist
    from avpea_dist.train.checkpoint import load_checkpoint, save_checkpoint, tag_for
    from avpea_dist.train.elastic import gather_trainable
    from avpea_dist.train.loop import train_step

    cfg, task, engine, sched = _engine(world, stage)
    big = tiny_config(f"data.batch_size={GLOBAL}")
    out: dict = {"losses": {}, "lrs": {}}
    start = 0
    if resume:
        state = load_checkpoint(engine, Path(root) / tag_for(SAVE_AT), seed=0)
        start = state["step"]
        out["change"] = state["extra"].get("world_change")
        out["counters"] = (state["bad_samples"], state["seen_samples"])
        out["loaded"] = _plain(gather_trainable(engine)[0])
        out["sched"] = (sched.last_epoch, engine.global_steps)
    for step in range(start, STEPS):
        batch = _slice(fake_batch(big, 500 + step), rank, world)
        r = train_step(engine, [batch], engine.device, task.loss)
        assert r.applied
        out["losses"][step + 1] = r.loss
        out["lrs"][step + 1] = sched.get_last_lr()[0]
        if not resume and step + 1 == SAVE_AT:
            save_checkpoint(engine, Path(root), SAVE_AT, {"step": SAVE_AT, "bad_samples": rank + 1,
                                                          "seen_samples": 10 * (rank + 1), "extra": {}}, keep=3)
            out["saved"] = _plain(gather_trainable(engine)[0])
    out["final"] = _plain(gather_trainable(engine)[0])
    avdist.teardown()
    return out if rank == 0 else {"counters": out.get("counters")}


def _plain(tensors: dict) -> dict:
    """Numpy copies: torch tensors sent through a multiprocessing queue need their sender alive."""
    return {k: v.numpy().copy() for k, v in tensors.items()}


def _close(a: dict, b: dict) -> None:
    """Each tensor within STATE_RTOL of the uninterrupted run's, as a whole (relative norm of the difference):
    an entry whose gradient is ~0 may take an Adam step of either sign, so entry-wise bounds would be moot."""
    assert a.keys() == b.keys()
    for k in a:
        diff = float(np.linalg.norm(a[k] - b[k])) / max(float(np.linalg.norm(b[k])), 1e-30)
        assert diff < STATE_RTOL, f"{k} differs by {diff:.2e} (relative)"


@pytest.fixture(scope="module")
def zero2_run(tmp_path_factory) -> tuple[str, dict]:
    """2 ranks at ZeRO 2 to STEPS, checkpoint at SAVE_AT: (checkpoints root, rank 0's record). Both tests here
    read it (the second one edits a copy of the checkpoint)."""
    root = str(tmp_path_factory.mktemp("zero2") / "checkpoints")
    return root, run_ranks(_phase, 2, 2, root, False, world=2, timeout=600)[0]


def test_resume_at_other_world_sizes_and_zero_stages(zero2_run):
    root, base = zero2_run  # 2 ranks at ZeRO 2, checkpoint at step 2
    saved = base["saved"]
    assert any(k.startswith("exp_avg_sq/") for k in saved) and saved[next(k for k in saved if k.startswith("step/"))] == 2
    for world, stage in ((1, 0), (3, 1)):
        results = run_ranks(_phase, world, stage, root, True, world=world, timeout=600)
        got = results[0]
        # Exactly the saved state, re-partitioned: weights, both moments, AdamW's step; the schedule's position.
        assert got["loaded"].keys() == saved.keys()
        assert all(np.array_equal(got["loaded"][k], saved[k]) for k in saved), f"state changed at {world} ranks"
        assert got["sched"] == (SAVE_AT, SAVE_AT)
        assert got["change"] == {"step": SAVE_AT, "from": {"world_size": 2, "zero_stage": 2},
                                 "to": {"world_size": world, "zero_stage": stage}}
        # Per-rank counters: old totals (2+... bad 1+2=3, seen 10+20=30) shared out again, none lost.
        counters = [results[r]["counters"] for r in range(world)]
        assert sum(c[0] for c in counters) == 3 and sum(c[1] for c in counters) == 30
        for step in range(SAVE_AT + 1, STEPS + 1):
            assert math.isclose(got["losses"][step], base["losses"][step], rel_tol=RTOL), (world, step)
            assert got["lrs"][step] == base["lrs"][step]
        _close(got["final"], base["final"])


def test_a_checkpoint_without_the_consolidated_state_is_refused_at_another_world(zero2_run, tmp_path):
    """Older checkpoints (no trainable.safetensors) stay resumable at their own world size only: the 2-rank
    ZeRO-2 checkpoint without it is refused on 1 rank at ZeRO 0."""
    from avpea_dist.train.checkpoint import MANIFEST, tag_for
    from avpea_dist.fileio import sha256_file

    import json
    import shutil

    folder = tmp_path / "checkpoints" / tag_for(SAVE_AT)
    shutil.copytree(Path(zero2_run[0]) / tag_for(SAVE_AT), folder)
    (folder / "trainable.safetensors").unlink()
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["files"]["trainable.safetensors"]
    manifest["files"] = {n: sha256_file(folder / n) for n in manifest["files"]}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    results = run_ranks(_load_error, str(folder), world=1, timeout=600)
    assert "holds no trainable.safetensors" in results[0] and "relaunch with 2 ranks" in results[0], results[0]


def _load_error(rank: int, folder: str) -> str:
    from pathlib import Path

    from avpea_dist.runtime import world as avdist
    from avpea_dist.train.checkpoint import CheckpointError, load_checkpoint

    _, _, engine, _ = _engine(1, 0)
    try:
        load_checkpoint(engine, Path(folder))
    except CheckpointError as e:
        return str(e)
    finally:
        avdist.teardown()
    return "loaded"
