"""`avpea submit train --cluster slurm` on one node of the session's real Slurm (see slurmkit.py): sbatch, srun,
2 tasks, DeepSpeed on gloo, to a finished run folder."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from avpea_dist.train.metrics import read_jsonl

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.distributed]


def wait_until_gone(cluster, job_id: str, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while cluster.run("squeue", "-h", "-j", job_id).stdout.strip():
        if time.time() > deadline:
            pytest.fail(f"job {job_id} is still in the queue after {timeout_s:.0f} s")
        time.sleep(0.2)


def test_submit_train_runs_two_tasks_through_sbatch(slurm_cluster, synth_shards, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "avpea_dist.cli", "submit", "train", "configs/avel_tiny.yaml",
           f"data.shards={synth_shards}", f"train.out={out}", "model.img_size=32", "train.steps=2",
           "train.eval_every=2", "train.ckpt_every=2", "data.batch_size=2", "data.num_workers=0", "eval.batch_size=4",
           "--cluster", "slurm", "--tasks-per-node", "2", "--cpus-per-task", "1", "--time", "00:15:00",
           "--job-name", "avpea-test", "--wait"]
    env = dict(slurm_cluster.env, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text + "\n" + "\n".join(
        p.read_text()[-3000:] for p in sorted((out / "submitit").glob("*_log.*")))
    job_id = re.search(r"submitted train job (\d+): 1 node\(s\) x 2 task\(s\) on slurm", text).group(1)
    assert text.count("status=finished, step=2") == 2

    script = (out / "submitit" / f"{job_id}_submission.sh").read_text()
    assert "#SBATCH --ntasks-per-node=2" in script and "#SBATCH --signal=USR2@120" in script
    for rank in (0, 1):  # each task took its rank from Slurm's variables (through submitit's environment)
        log = (out / "submitit" / f"{job_id}_{rank}_log.err").read_text()
        assert f"job {job_id} rank {rank}/2" in log
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "finished" and result["world_size"] == 2 and result["test_accuracy"] is not None
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r.get("split") == "val"] == [2]
    assert (out / "final" / "adapters.safetensors").is_file()
    wait_until_gone(slurm_cluster, job_id, timeout_s=60)  # the tasks have returned; the job ends as they exit


def test_plain_sbatch_example_trains_two_tasks(slurm_cluster, synth_shards, tmp_path):
    out = tmp_path / "plain"
    log = tmp_path / "job.out"
    # Command-line options override the script's GPU-sized directives for this CPU-only node.
    cmd = ["sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1",
           "--gpus-per-node=0", "--time=15", f"--output={log}", "launchers/train.sbatch", "configs/avel_tiny.yaml",
           f"data.shards={synth_shards}", f"train.out={out}", "model.img_size=32", "train.steps=2",
           "train.eval_every=2", "data.batch_size=2", "data.num_workers=0", "eval.batch_size=4", "eval.final_split=none"]
    proc = slurm_cluster.run(*cmd)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().split(";")[0]
    wait_until_gone(slurm_cluster, job_id, timeout_s=600)  # polling: `sbatch --wait` checks only every ~30 s
    state = slurm_cluster.run("scontrol", "show", "job", job_id).stdout
    assert "JobState=COMPLETED" in state and "ExitCode=0:0" in state, state + log.read_text()[-4000:]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "finished" and result["world_size"] == 2 and result["step"] == 2


def test_a_job_slurm_refuses_is_one_clear_error(slurm_cluster, tmp_path):
    cmd = [sys.executable, "-m", "avpea_dist.cli", "submit", "train", "configs/avel_tiny.yaml",
           f"train.out={tmp_path / 'run'}", "--cluster", "slurm", "--partition", "nosuch", "--time", "00:10:00"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=slurm_cluster.env, timeout=120)
    assert proc.returncode == 1
    line = next(x for x in proc.stderr.splitlines() if x.startswith("avpea submit train: error: slurm refused"))
    assert "invalid partition specified: nosuch" in line
    assert "Traceback" not in proc.stderr
