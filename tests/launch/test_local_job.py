"""Real 2-task jobs through submitit's local executor: DeepSpeed on gloo, and a preemption that requeues.

The uninterrupted job is the reference; the preempted one must save on both ranks, requeue once,
resume, and log exactly the reference's losses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avpea_dist.train.metrics import read_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

STEPS = 6


def tiny_overrides(shards: Path, out: Path) -> list[str]:
    return [f"data.shards={shards}", f"train.out={out}", "model.img_size=32", f"train.steps={STEPS}",
            "train.eval_every=4", "train.ckpt_every=4", "train.log_every=1", "data.batch_size=2",
            "data.num_workers=0", "eval.batch_size=4", "train.deterministic=true"]


def submit_local(shards: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "avpea_dist.cli", "submit", "train", "configs/avel_tiny.yaml",
           *tiny_overrides(shards, out), "--cluster", "local", "--tasks-per-node", "2", "--cpus-per-task", "1",
           "--time", "00:15:00"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl")
            if r.get("split") == "train" and "loss" in r}


def task_logs(run_dir: Path) -> dict[int, str]:
    logs = {}
    for rank in (0, 1):
        (path,) = (run_dir / "submitit").glob(f"*_{rank}_log.err")
        logs[rank] = path.read_text()
    return logs


@pytest.fixture(scope="module")
def reference(synth_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "reference"
    proc = submit_local(synth_shards, out)
    text, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, text
    return out, text


def test_two_task_local_job_trains_with_deepspeed(reference):
    out, text = reference
    assert "submitted train job" in text and "on local" in text
    assert text.count(f"status=finished, step={STEPS}") == 2  # both ranks finished the same run
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2 and run["backend"] == "gloo"
    assert sorted(losses(out)) == list(range(1, STEPS + 1))
    assert json.loads((out / "result.json").read_text())["test_accuracy"] is not None
    logs = task_logs(out)
    assert "rank 0/2" in logs[0] and "rank 1/2" in logs[1]  # each task derived its rank from submitit's env
    assert not (out / "requeues.json").exists()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def test_preempted_job_saves_on_every_rank_requeues_and_continues_exactly(reference, synth_shards, tmp_path):
    ref_dir, _ = reference
    out = tmp_path / "preempted"
    proc = submit_local(synth_shards, out)
    first = proc.stdout.readline()
    assert first.startswith("submitted train job"), first
    controller = int(first.split()[3].rstrip(":"))
    deadline = time.time() + 300
    while max(losses(out), default=0) < 2:  # mid-run: two steps logged by rank 0
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.2)
    tasks = _children(controller)
    assert len(tasks) == 2
    for pid in tasks:  # what Slurm's --signal=USR2@N does: every task gets the signal
        os.kill(pid, signal.SIGUSR2)
    rest, _ = proc.communicate(timeout=600)
    text = first + rest
    assert proc.returncode == 0, text
    assert text.count(f"status=finished, step={STEPS}") == 2

    (event,) = json.loads((out / "requeues.json").read_text())
    saved = event["step"]
    assert 2 <= saved < STEPS and event["requeue"] == 1 and event["signal"] == "SIGUSR2"
    logs = task_logs(out)
    for rank in (0, 1):  # both ranks stopped at the same step, saved it, and resumed from it
        assert f"rank {rank}: run preempted at step {saved}" in logs[rank]
        assert f"rank {rank} resumed from" in logs[rank] and f"step {saved})" in logs[rank]
    assert "requeue 1 of at most 5" in logs[0]
    assert losses(out) == losses(ref_dir)  # every step's loss, before and after the requeue, is the reference's
