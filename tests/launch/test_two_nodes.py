"""Training on two Slurm nodes (n1 and n2 on this machine; see slurmkit.py), one rank on each.

The reference is the same config and seed under torchrun, 2 ranks on one node. The two-node job must log
the same per-step losses and sample digests and reach the same test accuracy; a two-node job preempted
mid-run (Slurm's time-limit signal to every task) must save the same step on both nodes, requeue itself,
come back, and continue to exactly the reference's losses.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avpea_dist.train.metrics import read_jsonl

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.distributed]

REPO = Path(__file__).resolve().parents[2]
STEPS = 6


def overrides(shards: Path, out: Path) -> list[str]:
    return [f"data.shards={shards}", f"train.out={out}", "model.img_size=32", f"train.steps={STEPS}",
            "train.eval_every=3", "train.ckpt_every=2", "train.log_every=1", "train.deterministic=true",
            "train.progress=false", "data.batch_size=2", "data.num_workers=0", "eval.batch_size=4",
            "optim.warmup_steps=2", "dist.timeout_s=120"]


def steps(out: Path) -> dict[int, tuple[float, int]]:
    """Per training step: (loss, digest of the sample keys all ranks read)."""
    path = out / "metrics.jsonl"
    records = read_jsonl(path) if path.is_file() else []
    return {r["step"]: (r["loss"], r["data_digest"]) for r in records if r.get("split") == "train" and "loss" in r}


def submit_two_nodes(cluster, shards: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "avpea_dist.cli", "submit", "train", "configs/avel_tiny.yaml",
           *overrides(shards, out), "--cluster", "slurm", "--nodes", "2", "--tasks-per-node", "1",
           "--cpus-per-task", "1", "--time", "00:15:00", "--job-name", "avpea-2n", "--wait"]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(cluster.env, OMP_NUM_THREADS="1"))


def finish(proc: subprocess.Popen, out: Path, first: str = "") -> str:
    rest, _ = proc.communicate(timeout=600)
    text = first + rest
    assert proc.returncode == 0, text + "\n" + "\n".join(
        p.read_text()[-3000:] for p in sorted((out / "submitit").glob("*_log.*")))
    return text


def task_logs(out: Path, job_id: str) -> dict[int, str]:
    return {rank: (out / "submitit" / f"{job_id}_{rank}_log.err").read_text() for rank in (0, 1)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_id_of(text: str) -> str:
    return re.search(r"submitted train job (\d+): 2 node\(s\) x 1 task\(s\) on slurm", text).group(1)


@pytest.fixture(scope="module")
def one_node_run(synth_shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one_node") / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           "-m", "avpea_dist.train.entry", "configs/avel_tiny.yaml", *overrides(synth_shards, out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(steps(out)) == list(range(1, STEPS + 1))
    return out


def test_two_node_training_equals_one_node_training(slurm_cluster, one_node_run, synth_shards, tmp_path):
    out = tmp_path / "two_nodes"
    text = finish(submit_two_nodes(slurm_cluster, synth_shards, out), out)
    job_id = job_id_of(text)
    assert text.count(f"status=finished, step={STEPS}") == 2
    logs = task_logs(out, job_id)
    assert f"rank 0/2 (local 0) on n1, master n1:" in logs[0]  # one rank per node; n1 hosts the rendezvous
    assert f"rank 1/2 (local 0) on n2, master n1:" in logs[1]
    assert steps(out) == steps(one_node_run)  # every step: the same loss, bit for bit, from the same samples
    result, reference = (json.loads((d / "result.json").read_text()) for d in (out, one_node_run))
    assert result["world_size"] == 2 and result["status"] == "finished"
    assert result["test_accuracy"] is not None and result["test_accuracy"] == reference["test_accuracy"]


def test_preemption_across_nodes_saves_one_step_on_both_and_continues_exactly(slurm_cluster, one_node_run,
                                                                              synth_shards, tmp_path):
    out = tmp_path / "preempted"
    proc = submit_two_nodes(slurm_cluster, synth_shards, out)
    first = proc.stdout.readline()
    job_id = job_id_of(first)
    deadline = time.time() + 300
    while max(steps(out), default=0) < 2:  # mid-run: two steps logged
        assert proc.poll() is None and time.time() < deadline, first + proc.stdout.read()
        time.sleep(0.2)
    # What `--signal=USR2@120` does near the time limit: the signal to every task of the job, on both nodes.
    signalled = time.time()
    assert slurm_cluster.run("scancel", "--signal=USR2", job_id).returncode == 0
    text = finish(proc, out, first)
    assert text.count(f"status=finished, step={STEPS}") == 2

    (event,) = json.loads((out / "requeues.json").read_text())
    saved = event["step"]
    assert 2 <= saved < STEPS and event["requeue"] == 1 and event["signal"] == "SIGUSR2"
    assert event["job_id"] == job_id
    logs = task_logs(out, job_id)  # a requeued job keeps its id; its tasks append to the same logs
    for rank, node in ((0, "n1"), (1, "n2")):  # both nodes stopped at the same step, saved it, resumed from it
        assert logs[rank].count(f"rank {rank}/2 (local 0) on {node}") == 2
        assert f"rank {rank}: run preempted at step {saved}" in logs[rank]
        assert f"rank {rank} resumed from" in logs[rank] and f"step {saved})" in logs[rank]
    assert "requeue 1 of at most 5" in logs[0]
    assert steps(out) == steps(one_node_run)  # before and after the requeue: the reference's steps exactly
    result = json.loads((out / "result.json").read_text())
    assert result["test_accuracy"] == json.loads((one_node_run / "result.json").read_text())["test_accuracy"]
    print(f"requeued job back and finished {time.time() - signalled:.1f} s after the signal")
