"""Issue 24: a run resumed on another number of ranks and another ZeRO stage continues the uninterrupted run.

Real jobs of the fault harness (forked ranks, gloo, real shards). The global batch is 6 clips (1, 2 and 3
ranks divide it), so every job sees the same global batches: a chain preempted by SIGTERM (every rank, as
Slurm sends it) mid-epoch on 2 ranks, continued on 1 rank, preempted again mid-epoch, finished on 3 ranks,
must log per step the same samples (``train.log_samples``) and the same loss within LOSS_RTOL as one
uninterrupted 2-rank run; `avpea run samples --check` passes on it. The same from ZeRO 2 to ZeRO 0, with a
SIGKILL in the middle of the first save at the new world size: the next job resumes from the last intact
checkpoint.
"""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
from runchecks import CONFIG, ZERO2, latest_pointer, losses, tiny_overrides

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

ELASTIC = ("data.global_batch=6", "data.batch_size=3", "train.log_samples=true")
# Per-step losses of runs whose only difference is the order of float additions (gloo's all-reduce over
# W ranks, the mean over 1-3 micro-batches): fp32 over a few dozen steps stays within ~1e-6 relative.
LOSS_RTOL = 1e-5
# A job's bound: the harness counts a job past it as hung. Generous, since a loaded machine makes a job
# wait on DeepSpeed's one-time build lock of its shared-memory op.
DEADLINE_S = 300


def _sigterm_at_step(nth: int) -> dict:
    return {"kind": "signal", "at": "step", "nth": nth, "sig": "SIGTERM", "rank": "all"}


def _samples(run: Path) -> dict[int, list[str]]:
    out = {}
    for path in sorted((run / "samples").glob("epoch_*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            out[rec["step"]] = rec["keys"]
    return out


def _world_changes(run: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [(r["step"], r["from"], r["to"]) for r in lines if r.get("event") == "world_change"]


def _same_run(run: Path, ref: Path) -> None:
    got, want = losses(run), losses(ref)
    assert sorted(got) == sorted(want), "the chain must log every step once, like the uninterrupted run"
    for step in want:
        assert math.isclose(got[step], want[step], rel_tol=LOSS_RTOL), f"step {step}: {got[step]} vs {want[step]}"
    assert _samples(run) == _samples(ref), "a step saw other samples than in the uninterrupted run"


def _check_samples_cli(run: Path) -> None:
    """`avpea run samples RUN --check`: per epoch no repeat, and no missing sample in a finished one."""
    from avpea_dist.cli import main

    assert main(["run", "samples", str(run), "--check"]) == 0


def _preempted(job, world: int) -> None:
    codes = [job.code(r) for r in range(world)]
    assert not job.hung and all(c not in (0, None) for c in codes), job.describe()
    assert "checkpoint saved, rerun the same command to resume" in job.log(0), job.describe()


def test_two_ranks_to_one_to_three_equals_the_uninterrupted_run(zygote, reference_for, synth_shards, tmp_path):
    ref, _ = reference_for(*ELASTIC)
    run = tmp_path / "run"
    args = tiny_overrides(synth_shards, run, *ELASTIC)
    # 34 training clips / 6 = 5 global batches an epoch: step 4 is mid epoch 0, step 7 mid epoch 1.
    job = zygote.run(tmp_path / "j1", CONFIG, args, faults=[_sigterm_at_step(4)], world=2, deadline_s=DEADLINE_S)
    _preempted(job, 2)
    first = int(latest_pointer(run).split("_")[1])
    assert 0 < first < 5
    job = zygote.run(tmp_path / "j2", CONFIG, args, faults=[_sigterm_at_step(3)], world=1, deadline_s=DEADLINE_S)
    _preempted(job, 1)
    second = int(latest_pointer(run).split("_")[1])
    assert 5 < second < 8
    job = zygote.run(tmp_path / "j3", CONFIG, args, world=3, deadline_s=DEADLINE_S)
    assert [job.code(r) for r in range(3)] == [0, 0, 0], job.describe()
    assert _world_changes(run) == [(first, {"world_size": 2, "zero_stage": 0}, {"world_size": 1, "zero_stage": 0}),
                                   (second, {"world_size": 1, "zero_stage": 0}, {"world_size": 3, "zero_stage": 0})]
    _same_run(run, ref)
    _check_samples_cli(run)


def test_zero2_to_zero0_with_a_kill_during_the_first_save_at_the_new_world(zygote, reference_for, synth_shards,
                                                                         tmp_path):
    ref, _ = reference_for(*ELASTIC, *ZERO2)
    run = tmp_path / "run"
    job = zygote.run(tmp_path / "j1", CONFIG, tiny_overrides(synth_shards, run, *ELASTIC, *ZERO2),
                     faults=[_sigterm_at_step(3)], world=2, deadline_s=DEADLINE_S)
    _preempted(job, 2)
    intact = latest_pointer(run)
    zero0 = tiny_overrides(synth_shards, run, *ELASTIC)  # dist.zero_stage=0
    # The first save at the new world (step 4) dies in its second file: a torn, manifest-less folder.
    job = zygote.run(tmp_path / "j2", CONFIG, zero0, faults=[{"kind": "kill", "at": "ckpt_file", "nth": 2}],
                     world=1, deadline_s=DEADLINE_S)
    assert job.signal(0) == signal.SIGKILL, job.describe()
    assert latest_pointer(run) == intact
    job = zygote.run(tmp_path / "j3", CONFIG, zero0, world=3, deadline_s=DEADLINE_S)
    assert [job.code(r) for r in range(3)] == [0, 0, 0], job.describe()
    loaded = [e["step"] for e in job.events(0, "load")]
    assert loaded == [int(intact.split("_")[1])], f"resumed from {loaded}, not from the intact {intact}"
    assert _world_changes(run)[-1] == (loaded[0], {"world_size": 2, "zero_stage": 2},
                                       {"world_size": 3, "zero_stage": 0})
    _same_run(run, ref)
    _check_samples_cli(run)
