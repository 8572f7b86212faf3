"""A Ray Tune sweep on two Slurm nodes (n1, n2 on this machine; see slurmkit.py) that loses n2 mid-way.

`avpea submit sweep --nodes 2` starts a Ray node on each Slurm node (one CPU each, so one trial each at a
time). Once a trial on n2 has saved a checkpoint, n2 dies: its slurmd, step daemons, Ray node and trials,
all killed at once. Ray marks the node dead; Tune retries that trial on n1 from its checkpoint while the
sweep goes on. Then Slurm sets n2 down, which ends the whole job early, and `avpea sweep` continues the
sweep from its folder on this machine: every trial ends in the table once, those finished before are
not rerun, and each row names the node(s) its trial ran on.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avpea_dist.train.checkpoint import complete_tags

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.distributed]

REPO = Path(__file__).resolve().parents[2]
BOTTLENECKS = (8, 16)  # one trial per node at a time: the fewest that test placement, loss and resume
STEPS = 6


def sweep_args(shards: Path, root: Path) -> list[str]:
    return ["configs/avel_tiny.yaml", f"data.shards={shards}", "model.img_size=32", f"train.steps={STEPS}",
            "train.eval_every=2", "train.ckpt_every=2", "data.batch_size=2", "data.num_workers=0",
            "eval.batch_size=4", "eval.final_split=none", "--bottleneck", ",".join(map(str, BOTTLENECKS)),
            "--scheduler", "fifo", "--max-failures", "2", "--name", "lost", "--root", str(root)]


def trial_states(folder: Path) -> dict[str, dict]:
    states = {}
    for path in (folder / "trials").glob("*.json"):
        try:
            states[path.stem] = json.loads(path.read_text())
        except ValueError:  # written atomically, but a reader may still race a rename on some filesystems
            continue
    return states


def wait_for(what: str, check, timeout_s: float, folder: Path, logs: Path):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        found = check(trial_states(folder))
        if found:
            return found
        time.sleep(0.5)
    tails = "\n".join(f"== {p.name}\n{p.read_text()[-2500:]}" for p in sorted(logs.glob("*_log.*")))
    pytest.fail(f"no {what} within {timeout_s:.0f} s; trials: {trial_states(folder)}\n{tails}")


def saved_step(folder: Path, key: str) -> int:
    """The step of the trial's newest complete checkpoint (0: none yet)."""
    tags = complete_tags(folder / "runs" / key / "checkpoints")
    return tags[-1][0] if tags else 0


def on(state: dict, host: str) -> bool:
    return bool(state.get("nodes")) and state["nodes"][-1]["host"] == host


def test_sweep_survives_a_lost_node_and_resumes_after_the_job_ends(slurm_cluster, synth_shards, tmp_path):
    folder = tmp_path / "lost"
    # Ray's dead-node detection, shortened for the test (default: 5 failed health checks 3 s apart).
    env = dict(slurm_cluster.env, OMP_NUM_THREADS="1", RAY_health_check_period_ms="1000",
               RAY_health_check_failure_threshold="3")
    submit = subprocess.run([sys.executable, "-m", "avpea_dist.cli", "submit", "sweep",
                             *sweep_args(synth_shards, tmp_path), "--cluster", "slurm", "--nodes", "2",
                             "--cpus-per-task", "1", "--time", "00:15:00", "--job-name", "avpea-sweep-2n"],
                            cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert submit.returncode == 0, submit.stdout + submit.stderr
    job_id = re.search(r"submitted sweep job (\d+): 2 node\(s\) x 1 task\(s\) on slurm", submit.stdout).group(1)
    logs = folder / "submitit"

    # Placed on both nodes; the trial on n2 has saved a checkpoint in its run folder.
    victim = wait_for("checkpointed trial on n2", lambda s: next(
        (k for k, v in s.items() if on(v, "n2") and v["status"] == "running" and saved_step(folder, k)), None),
        240, folder, logs)
    assert any(on(v, "n1") for v in trial_states(folder).values())
    slurm_cluster.lose_node("n2")
    saved = saved_step(folder, victim)

    # The sweep goes on with n1 alone: the lost trial is retried there, from its checkpoint.
    retried = wait_for("retry of the lost trial", lambda s: s[victim] if s[victim].get("starts") == 2 else None,
                       240, folder, logs)
    assert on(retried, "n1") and retried["nodes"][-1]["from_step"] >= saved
    assert slurm_cluster.run("squeue", "-h", "-j", job_id, "-o", "%T").stdout.strip() == "RUNNING"
    finished_before = {k for k, v in trial_states(folder).items() if v["status"] == "finished"}
    assert len(finished_before) < len(BOTTLENECKS), "the sweep ended before the job did: nothing left to resume"

    # Slurm notices the lost node: it sets it down and ends the job, sweep unfinished.
    try:
        slurm_cluster.run("scontrol", "update", "nodename=n2", "state=down", "reason=lost_in_test")
        deadline = time.time() + 60
        while slurm_cluster.run("squeue", "-h", "-j", job_id, "-o", "%T").stdout.strip() == "RUNNING":
            assert time.time() < deadline, "the job still runs 60 s after its node went down"
            time.sleep(0.5)
        slurm_cluster.run("scancel", job_id)  # requeued for two nodes, one of them down: it would wait
        slurm_cluster.kill(slurm_cluster.processes(job_id=job_id))
    finally:  # n2 comes back for the tests after this one
        slurm_cluster.start_node("n2")
        slurm_cluster.run("scontrol", "update", "nodename=n2", "state=resume")
    before = trial_states(folder)

    rerun = subprocess.run([sys.executable, "-m", "avpea_dist.cli", "sweep", *sweep_args(synth_shards, tmp_path),
                            "--num-cpus", "2"], cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-5000:] + rerun.stderr[-5000:]
    assert "continuing sweep lost" in rerun.stdout + rerun.stderr

    after = trial_states(folder)
    assert set(after) == {f"bottleneck-{b}" for b in BOTTLENECKS}
    for key in finished_before:  # finished on the cluster: neither rerun nor touched
        assert after[key] == before[key] and after[key]["starts"] == 1
    for key, state in after.items():
        assert state["status"] == "finished" and state["step"] == STEPS, (key, state)
        resumed = [start["from_step"] for start in state["nodes"]]
        assert resumed == sorted(resumed), (key, state["nodes"])  # no retry went back behind a checkpoint
    with open(folder / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["bottleneck"]) for r in rows] == list(BOTTLENECKS)  # each trial once
    assert {r["status"] for r in rows} == {"finished"} and {int(r["steps"]) for r in rows} == {STEPS}
    lost = next(r for r in rows if f"bottleneck-{r['bottleneck']}" == victim)
    assert lost["hosts"].split()[:2] == ["n2", "n1"]
    n2_id, n1_id = lost["ray_nodes"].split()[:2]
    assert n1_id != n2_id and all(len(r["ray_nodes"].split()[0]) == len(n1_id) for r in rows)
    md = (folder / "results.md").read_text()
    assert md.count("\n") == 2 + len(BOTTLENECKS) and md.splitlines()[0].endswith("| hosts | ray_nodes |")
    assert n2_id[:8] in md and n1_id[:8] in md
    assert (folder / "accuracy_vs_params.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not slurm_cluster.processes(job_id=job_id)
