"""A NaN or inf loss or gradient on one rank only: every rank skips that step, leaving no trace.

The fault multiplies one rank's loss by NaN (a non-finite loss) or replaces its logits' gradient by inf
(a finite loss, a non-finite gradient). Both ranks must take the same decision on the same step; a
skipped step leaves trainable parameters, optimizer state, the LR schedule and DeepSpeed's step
counters bitwise unchanged (a digest of all of them is taken before and after every step), and the run
stops with a clear error after ``train.max_skipped_steps`` consecutive skips.
"""

from __future__ import annotations

import pytest
from runchecks import (CONFIG, DETECT_BOUND_S, STEPS, ZERO2, checkpoint_steps, survivors_exit_within,
                       tiny_overrides, train_records)

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

ONE_OFF = [{"kind": "nonfinite", "mode": "loss", "value": "nan", "nth": 3, "rank": 1},
           {"kind": "nonfinite", "mode": "grad", "value": "inf", "nth": 6, "rank": 0}]


# ZeRO-2 keeps reduced gradients in its own partitions: it is the engine's other finiteness path.
@pytest.mark.timeout(240)
@pytest.mark.parametrize("zero", [0, 2])
def test_one_rank_nonfinite_step_is_skipped_by_all_ranks_with_state_unchanged(zygote, synth_shards, tmp_path, zero,
                                                                               figures):
    run = tmp_path / "run"
    extra = ZERO2 if zero else ()
    job = zygote.run(tmp_path / "logs", CONFIG, tiny_overrides(synth_shards, run, *extra), faults=ONE_OFF)
    assert [job.code(0), job.code(1)] == [0, 0], job.describe()
    steps = [job.events(r, "step") for r in (0, 1)]
    assert [[e["applied"] for e in s] for s in steps] == [[c not in (3, 6) for c in range(1, STEPS + 3)]] * 2
    for s in steps:
        for e in s:
            if not e["applied"]:
                assert e["before"] == e["after"], f"skipped step {e['call']} changed the training state"
                assert e["global_steps"] == s[e["call"] - 2]["global_steps"]
            else:
                assert e["before"] != e["after"]
    assert steps[0][-1]["global_steps"] == STEPS
    skipped = [r for r in train_records(run) if r.get("skipped")]
    assert [(r["step"], r["consecutive_skips"]) for r in skipped] == [(2, 1), (4, 1)]
    losses = [r["loss"] for r in train_records(run) if r.get("split") == "train" and "loss" in r]
    assert len(losses) == STEPS and all(x == x and abs(x) != float("inf") for x in losses)
    figures.setdefault("nonfinite", []).append({"zero_stage": zero, "injected": 2, "skipped_on_all_ranks": 2})


@pytest.mark.timeout(240)
def test_consecutive_nonfinite_steps_stop_the_run_with_a_clear_error(zygote, synth_shards, tmp_path, figures):
    run = tmp_path / "run"
    fault = {"kind": "nonfinite", "mode": "loss", "value": "nan", "nth": 3, "count": 1000, "rank": 1}
    job = zygote.run(tmp_path / "logs", CONFIG, tiny_overrides(synth_shards, run, "train.max_skipped_steps=3"),
                     faults=[fault])
    assert not job.hung and not job.report["leftovers"], job.describe()
    assert [job.code(0), job.code(1)] == [2, 2], job.describe()
    for r in (0, 1):
        assert [e["applied"] for e in job.events(r, "step")] == [True, True, False, False, False]
        (line,) = [x for x in job.log(r).splitlines() if "error:" in x]
        assert "3 consecutive steps had a non-finite loss or gradient (at step 2)" in line
        assert str(run / "checkpoints") in line  # where the last good checkpoint is
    survivors_exit_within(job, DETECT_BOUND_S)
    assert checkpoint_steps(run) == ([2], [])
    figures["nonfinite_stop"] = {"max_skipped_steps": 3, "stopped_after_skips": 3, "hangs": int(job.hung)}
