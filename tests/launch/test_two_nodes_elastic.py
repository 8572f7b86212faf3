"""Issue 24 on the real two-node Slurm cluster (slurmkit.py): a run folder started as a 2-node job, requeued
by Slurm's time-limit signal, and resubmitted as a 1-node job (``avpea submit train ... --nodes 1``) finishes
as the uninterrupted 2-rank run would: the same samples each step, the losses within float reduction-order
tolerance, and the log says the world changed at the step it was saved.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from avpea_dist.train.metrics import read_jsonl
from test_two_nodes import REPO, finish, free_port, job_id_of, overrides

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.distributed]

ELASTIC = ["data.global_batch=4", "train.log_samples=true"]
LOSS_RTOL = 1e-5  # see tests/reliability/test_fault_world_change.py


def _steps(out: Path) -> dict[int, float]:
    path = out / "metrics.jsonl"
    return {r["step"]: r["loss"] for r in (read_jsonl(path) if path.is_file() else [])
            if r.get("split") == "train" and "loss" in r}


def _samples(out: Path) -> dict[int, list[str]]:
    return {r["step"]: r["keys"] for p in sorted((out / "samples").glob("epoch_*.jsonl")) for r in read_jsonl(p)}


def _submit(cluster, shards: Path, out: Path, nodes: int):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "avpea_dist.cli", "submit", "train", "configs/avel_tiny.yaml",
           *overrides(shards, out), *ELASTIC, "--cluster", "slurm", "--nodes", str(nodes), "--tasks-per-node", "1",
           "--cpus-per-task", "1", "--time", "00:15:00", "--job-name", f"avpea-{nodes}n", "--wait"]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(cluster.env, OMP_NUM_THREADS="1"))


def test_a_requeued_two_node_job_resubmitted_on_one_node_finishes_as_the_uninterrupted_run(
        slurm_cluster, synth_shards, tmp_path):
    import os
    import subprocess
    import sys

    ref = tmp_path / "reference"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           "-m", "avpea_dist.train.entry", "configs/avel_tiny.yaml", *overrides(synth_shards, ref), *ELASTIC]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    out = tmp_path / "elastic"
    proc = _submit(slurm_cluster, synth_shards, out, 2)
    first = proc.stdout.readline()
    job_id = job_id_of(first)
    deadline = time.time() + 300
    while max(_steps(out), default=0) < 2:
        assert proc.poll() is None and time.time() < deadline, first + proc.stdout.read()
        time.sleep(0.2)
    assert slurm_cluster.run("scancel", "--signal=USR2", job_id).returncode == 0  # the time-limit signal
    while not (out / "requeues.json").is_file():  # saved and requeued by rank 0
        assert time.time() < deadline, first + proc.stdout.read()
        time.sleep(0.2)
    (event,) = json.loads((out / "requeues.json").read_text())
    saved = event["step"]
    # The requeued 2-node job is cancelled; once Slurm has no trace of it running, the run folder goes on as a
    # 1-node job. The 2-node `--wait` client (it would keep polling the cancelled job) is stopped by us.
    assert slurm_cluster.run("scancel", job_id).returncode == 0
    while slurm_cluster.run("squeue", "-h", "-j", job_id).stdout.strip():
        assert time.time() < deadline + 300, slurm_cluster.run("squeue", "-j", job_id).stdout
        time.sleep(0.5)
    proc.kill()
    proc.communicate(timeout=60)
    finish(_submit(slurm_cluster, synth_shards, out, 1), out)

    got, want = _steps(out), _steps(ref)
    assert sorted(got) == sorted(want)
    for step in want:
        assert math.isclose(got[step], want[step], rel_tol=LOSS_RTOL), (step, got[step], want[step])
    assert _samples(out) == _samples(ref)
    check = subprocess.run([sys.executable, "-m", "avpea_dist.cli", "run", "samples", str(out), "--check"], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    changes = [r for r in read_jsonl(out / "metrics.jsonl") if r.get("event") == "world_change"]
    assert changes and changes[-1]["to"]["world_size"] == 1 and changes[-1]["from"]["world_size"] == 2
    assert changes[-1]["step"] >= saved
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "finished" and result["world_size"] == 1
