"""SIGKILL of one rank at 20 points of a 2-rank run (6 more under ZeRO-2), mid-save included: fail fast,
lose nothing, resume exactly. A frozen rank (SIGSTOP) is noticed within ``dist.timeout_s``.

The trials form chains on one run folder: each job resumes what the previous, killed one left and is
killed in turn; a chain ends with a job that finishes. Then the chain's metrics (every step's loss,
every validation), the samples each rank trained on, and the final adapter weights must equal those of
an uninterrupted run, bit for bit. After every kill: the survivor exited by itself within the bound
(gloo reports the dead peer; ``dist.timeout_s`` is the backstop), no process is left behind, ``latest``
names a complete checkpoint, and the newest checkpoint that every rank finished saving is still there,
complete; the next job resumes from exactly the newest complete one.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import Any, Iterator

import pytest
from runchecks import (CONFIG, DETECT_BOUND_S, STEPS, ZERO2, adapter_tensors, checkpoint_steps, complete_checkpoint,
                       consumed_batches, latest_pointer, survivors_exit_within, tiny_overrides, train_records)

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

TRIALS = 20
EPOCH_BATCHES = 8  # 34 training clips // (2 clips x 2 ranks): one virtual epoch = the whole run

# Where a rank can die: (hook point, ranks that reach it, occurrences to pick from); see rankfaults.py
SAVE_POINTS = [("ckpt_file", (0, 1), 3),  # mid-file: a torn DeepSpeed or rank file in the checkpoint
               ("manifest", (0,), 2),     # every rank's files written, the manifest not yet
               ("latest", (0,), 2),       # the manifest written, 'latest' not yet moved
               ("prune", (0,), 1),        # half-way through deleting the previous checkpoint
               ("barrier", (0, 1), 4)]    # in a save's barriers (or DeepSpeed's)
STEP_POINTS = [("step", (0, 1), 4), ("backward", (0, 1), 4), ("batch", (0, 1), 4), ("eval", (0, 1), 1)]


def trial_faults(seed: int = 7) -> Iterator[dict[str, Any]]:
    """An endless, seeded sequence of kill specs: every third one inside a save, every fifth a timer."""
    rng = random.Random(seed)
    i = 0
    while True:
        i += 1
        if i % 5 == 0:
            yield {"kind": "kill", "at": "timer", "delay": round(rng.uniform(0.05, 1.5), 3), "rank": rng.choice((0, 1))}
            continue
        point, ranks, nths = rng.choice(SAVE_POINTS if i % 3 == 0 else STEP_POINTS + SAVE_POINTS)
        yield {"kind": "kill", "at": point, "nth": rng.randint(1, nths), "rank": rng.choice(ranks)}


def _check_after_kill(job, run: Path, saved_steps: set[int], fault: dict[str, Any]) -> tuple[float, int | None]:
    assert not job.hung, job.describe()
    assert not job.report["leftovers"], f"processes outlived the job: {job.report['leftovers']}"
    victims = [r for r in job.report["ranks"] if r["signal"] == signal.SIGKILL]
    assert len(victims) == 1, f"{fault}: expected one killed rank\n{job.describe()}"
    survivor = next(r for r in job.report["ranks"] if r is not victims[0])
    assert survivor["code"] not in (0, None), f"the survivor of {fault} did not fail\n{job.describe()}"
    detect = survivors_exit_within(job, DETECT_BOUND_S)
    complete, _ = checkpoint_steps(run)
    pointer = latest_pointer(run)
    if pointer is not None:
        assert complete_checkpoint(run / "checkpoints" / pointer), f"{fault}: 'latest' names incomplete {pointer}"
    if saved_steps:  # the newest checkpoint every rank finished saving survives, complete
        assert complete and max(complete) >= max(saved_steps), f"{fault}: lost checkpoint {max(saved_steps)}"
    return detect, max(complete) if complete else None


def killed_mid_save(job) -> bool:
    """Whether the rank that died had begun a checkpoint save that it never finished."""
    for rank in (0, 1):
        fault = job.events(rank, "fault")
        begun = job.events(rank, "save_begin")
        if fault and begun:
            return not any(e["t"] > begun[-1]["t"] for e in job.events(rank, "save"))
    return False


def _check_chain(jobs, run: Path, reference) -> int:
    """The chain ended like the uninterrupted run; returns the samples lost (asserted 0)."""
    ref_run, ref_job = reference
    assert train_records(run) == train_records(ref_run)
    lost = 0
    for rank in (0, 1):
        got, want = consumed_batches(jobs, rank), consumed_batches([ref_job], rank)
        lost += sum(len(keys) for pos, keys in want.items() if got.get(pos) != keys)
        assert got == want, f"rank {rank} trained on other samples than the uninterrupted run"
    assert adapter_tensors(run / "final" / "adapters.safetensors") == \
        adapter_tensors(ref_run / "final" / "adapters.safetensors")
    return lost


def _run_chain(zygote, run: Path, overrides: list[str], faults: Iterator[dict[str, Any]], budget: int,
               stats: dict[str, Any]) -> list:
    """Jobs on one run folder, each killed by the next fault, until one finishes (or ``budget`` kills)."""
    jobs, saved_steps, expect_resume = [], set(), None
    while True:
        fault = next(faults) if len(stats["kills"]) < budget else None
        job = zygote.run(run.parent / f"{run.name}_logs" / str(len(jobs)), CONFIG, overrides,
                         faults=[fault] if fault else [], deadline_s=150)
        jobs.append(job)
        stats["hangs"] += job.hung
        killed = any(r["signal"] == signal.SIGKILL for r in job.report["ranks"])
        for rank in (0, 1):  # resumed from the newest complete checkpoint (unless killed before loading)
            loads = job.events(rank, "load")
            if loads or not killed:
                resumed = loads[0]["step"] if loads else None
                assert resumed == expect_resume, f"rank {rank} resumed from {resumed}, not {expect_resume}"
            batches = job.events(rank, "batch")  # and went on with the batch right after the checkpoint
            if loads and batches and expect_resume < STEPS:
                assert (batches[0]["epoch"], batches[0]["index"]) == divmod(expect_resume, EPOCH_BATCHES)
        saves = [{e["step"] for e in job.events(r, "save")} for r in (0, 1)]
        saved_steps |= saves[0] & saves[1]
        if not killed:
            assert [job.code(0), job.code(1)] == [0, 0], f"after {fault} (not fired):\n{job.describe()}"
            return jobs
        detect, expect_resume = _check_after_kill(job, run, saved_steps, fault)
        stats["kills"].append(fault)
        stats["detect"].append(detect)
        stats["in_save"] += killed_mid_save(job)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("zero,trials,seed", [(0, TRIALS, 7), (2, 6, 11)], ids=["zero0", "zero2"])
def test_sigkill_one_rank_anywhere_loses_nothing_and_resumes_exactly(zygote, synth_shards, reference_for, tmp_path,
                                                                     zero, trials, seed, figures):
    extra = ZERO2 if zero else ()
    reference = reference_for(*extra)
    faults = trial_faults(seed)
    stats: dict[str, Any] = {"kills": [], "detect": [], "in_save": 0, "hangs": 0}
    chains = lost = 0
    while len(stats["kills"]) < trials:
        run = tmp_path / f"chain{chains}"
        jobs = _run_chain(zygote, run, tiny_overrides(synth_shards, run, *extra), faults, trials, stats)
        lost += _check_chain(jobs, run, reference)
        chains += 1
    assert stats["in_save"] >= trials // 4, f"only {stats['in_save']} of the kills landed inside a checkpoint save"
    detect = sorted(stats["detect"])
    figures[f"sigkill_zero{zero}"] = {
        "trials": len(stats["kills"]), "killed_mid_save": stats["in_save"], "chains": chains,
        "survived": len(stats["kills"]), "samples_lost": lost, "hangs": stats["hangs"],
        "max_detect_s": round(detect[-1], 3), "median_detect_s": round(detect[len(detect) // 2], 3),
        "faults": stats["kills"]}


@pytest.mark.timeout(180)
def test_a_frozen_rank_is_detected_within_the_collective_timeout(zygote, synth_shards, tmp_path, figures):
    """A rank that stops responding without dying (SIGSTOP: a hung node, a stuck filesystem) closes no
    socket; the survivor must give up after ``dist.timeout_s`` instead of waiting forever."""
    timeout_s = 10
    job = zygote.run(tmp_path / "logs", CONFIG,
                     tiny_overrides(synth_shards, tmp_path / "run", f"dist.timeout_s={timeout_s}"),
                     faults=[{"kind": "freeze", "at": "step", "nth": 3, "rank": 1}], deadline_s=60)
    assert not job.hung, job.describe()
    (frozen,) = job.events(1, "fault")
    survivor = job.report["ranks"][0]
    assert survivor["code"] not in (0, None) and job.signal(1) == signal.SIGKILL, job.describe()
    detect = survivor["t_exit"] - frozen["t"]
    assert timeout_s - 1 <= detect <= timeout_s + 15, f"the frozen rank was noticed after {detect:.1f} s"
    figures["frozen_rank"] = {"timeout_s": timeout_s, "detect_s": round(detect, 3), "hangs": 0}


@pytest.mark.timeout(180)
def test_a_killed_rank_leaves_no_loader_worker_behind(zygote, synth_shards, tmp_path):
    """With loader worker processes (forkserver), a SIGKILLed rank's workers must go away by themselves."""
    job = zygote.run(tmp_path / "logs", CONFIG, tiny_overrides(synth_shards, tmp_path / "run", "data.num_workers=1"),
                     faults=[{"kind": "kill", "at": "step", "nth": 3, "rank": 1}])
    (fault,) = job.events(1, "fault")
    assert fault["descendants"], "the rank had no loader worker when it died: the test checks nothing"
    assert job.signal(1) == signal.SIGKILL and job.code(0) not in (0, None), job.describe()
    assert not job.report["leftovers"], f"processes outlived their rank: {job.report['leftovers']}"
    survivors_exit_within(job, DETECT_BOUND_S)
