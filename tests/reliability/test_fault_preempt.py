"""Preemption signals (SIGUSR1/SIGTERM, as Slurm sends) during a step and during a save, then a second one.

A signal only raises a flag; the ranks agree on it at the next step boundary, every rank saves that same
step exactly once, and the job exits 3 (preempted). A second signal while the first is being honoured
changes nothing. Rerunning resumes from the saved step and ends exactly like the uninterrupted run.
"""

from __future__ import annotations

import pytest
from runchecks import CONFIG, checkpoint_steps, latest_pointer, tiny_overrides, train_records

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

# (first signal, second signal, step saved by the preemption). ZeRO-0: rank 0 writes 3 checkpoint files
# per save, rank 1 two; the periodic saves come at steps 2, 4, 6.
CASES = {
    "rank1-mid-step-then-during-its-save": (
        {"kind": "signal", "sig": "SIGUSR1", "at": "backward", "nth": 3, "rank": 1},
        {"kind": "signal", "sig": "SIGTERM", "at": "ckpt_file", "nth": 3, "rank": 1}, 3),
    "rank0-during-a-save-then-again": (
        {"kind": "signal", "sig": "SIGUSR1", "at": "ckpt_file", "nth": 1, "rank": 0},
        {"kind": "signal", "sig": "SIGUSR1", "at": "ckpt_file", "nth": 2, "rank": 0}, 3),
    "every-rank-mid-step-twice": (
        {"kind": "signal", "sig": "SIGTERM", "at": "backward", "nth": 5, "rank": "all"},
        {"kind": "signal", "sig": "SIGTERM", "at": "save", "nth": 3, "rank": "all"}, 5),
}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("case", list(CASES))
def test_preemption_saves_the_same_step_once_on_every_rank(zygote, synth_shards, reference, tmp_path, case,
                                                           figures):
    first, second, stop_step = CASES[case]
    run = tmp_path / "run"
    job = zygote.run(tmp_path / "logs0", CONFIG, tiny_overrides(synth_shards, run), faults=[first, second])
    assert not job.hung and not job.report["leftovers"], job.describe()
    assert [job.code(0), job.code(1)] == [3, 3], job.describe()  # 3: preempted, rerun to resume
    fired = [e for r in (0, 1) for e in job.events(r, "fault")]
    assert len(fired) == (4 if first["rank"] == "all" else 2), fired  # both signals were delivered
    periodic = [s for s in (2, 4, 6) if s < stop_step]
    for r in (0, 1):
        saved = [e["step"] for e in job.events(r, "save")]
        assert saved == periodic + [stop_step], f"rank {r} saved {saved}"  # the stop step once, nothing after
        assert max(e["call"] for e in job.events(r, "step")) == stop_step
    assert f"stopping at step {stop_step}" in job.log(0)
    complete, partial = checkpoint_steps(run)
    assert max(complete) == stop_step and not partial, (complete, partial)  # (the best-on-val one is kept too)
    assert latest_pointer(run) == f"step_{stop_step:08d}"

    rerun = zygote.run(tmp_path / "logs1", CONFIG, tiny_overrides(synth_shards, run))
    assert [rerun.code(0), rerun.code(1)] == [0, 0], rerun.describe()
    assert [e["step"] for r in (0, 1) for e in rerun.events(r, "load")] == [stop_step, stop_step]
    assert train_records(run) == train_records(reference[0])
    figures.setdefault("preemption", []).append({"case": case, "saved_step": stop_step, "survived": True})
