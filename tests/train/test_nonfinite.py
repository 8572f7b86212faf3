"""A NaN on one rank: every rank skips the step, and nothing changes, bit for bit (ZeRO 0 and 2)."""

from __future__ import annotations

import pytest
import torch

from trainkit import fake_batch, model_and_task, run_ranks, tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def _snapshot(engine) -> dict[str, torch.Tensor]:
    out = {f"p:{n}": p.detach().clone() for n, p in engine.module.named_parameters()}
    opt = engine.optimizer
    inner = getattr(opt, "optimizer", opt)  # ZeRO wraps torch's AdamW
    for i, (p, st) in enumerate(inner.state.items()):
        for k, v in st.items():
            out[f"s{i}:{k}"] = v.detach().clone() if torch.is_tensor(v) else torch.tensor(v)
    return out


def _nan_on_rank1(rank: int) -> dict:
    from avpea_dist.runtime import world as avdist

    avdist.init_process_group(avdist.world_info_from_env(), "gloo", 60)
    try:
        return {stage: _one_stage(rank, stage) for stage in (0, 2)}  # one spawn for both: start-up is the cost
    finally:
        avdist.teardown()


def _one_stage(rank: int, stage: int) -> dict:
    from avpea_dist.train.engine import build_engine
    from avpea_dist.train.loop import train_step

    cfg = tiny_config(f"dist.zero_stage={stage}")
    torch.manual_seed(0)
    model, task = model_and_task(cfg)
    engine, scheduler = build_engine(model, cfg)
    first = train_step(engine, [fake_batch(cfg, 10 + rank)], engine.device, task.loss)
    before, lr_before = _snapshot(engine), list(scheduler.get_last_lr())
    skipped = train_step(engine, [fake_batch(cfg, 20 + rank, nan=rank == 1)], engine.device, task.loss)
    after, lr_after = _snapshot(engine), list(scheduler.get_last_lr())
    unchanged = all(torch.equal(before[k], after[k]) for k in before) and before.keys() == after.keys()
    third = train_step(engine, [fake_batch(cfg, 30 + rank)], engine.device, task.loss)
    changed = any(not torch.equal(after[k], v) for k, v in _snapshot(engine).items())
    return {"first": first.applied, "skipped": skipped.applied, "unchanged": unchanged,
            "lr_same": lr_before == lr_after, "third": third.applied, "changed": changed,
            "global_steps": engine.global_steps}


@pytest.fixture(scope="module")
def two_ranks():
    return run_ranks(_nan_on_rank1)


@pytest.mark.parametrize("stage", [0, 2])
def test_nan_on_one_rank_skips_on_all_and_changes_nothing(two_ranks, stage):
    for rank, by_stage in two_ranks.items():
        r = by_stage[stage]
        assert r["first"] and r["third"], r
        assert r["skipped"] is False, f"rank {rank} applied a step with a NaN on rank 1"
        assert r["unchanged"], f"rank {rank}: a skipped step changed parameters or optimizer state"
        assert r["lr_same"] and r["changed"], r
        assert r["global_steps"] == 2, r
