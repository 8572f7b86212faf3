"""A real Ray Tune sweep of three bottleneck sizes (ASHA, num_cpus=2), killed mid-way and continued."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BOTTLENECKS = (8, 16, 24)


def sweep_cmd(shards: Path, root: Path) -> list[str]:
    return [sys.executable, "-m", "avpea_dist.cli", "sweep", "configs/avel_tiny.yaml", f"data.shards={shards}",
            "model.img_size=32", "train.steps=4", "train.eval_every=2", "train.ckpt_every=2", "data.batch_size=2",
            "data.num_workers=0", "eval.batch_size=4", "eval.final_split=none",
            "--bottleneck", ",".join(map(str, BOTTLENECKS)), "--scheduler", "asha", "--num-cpus", "2",
            "--name", "bn", "--root", str(root)]


def trial_states(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (folder / "trials").glob("*.json")}


def test_sweep_killed_mid_way_continues_without_repeating_finished_trials(synth_shards, tmp_path):
    folder = tmp_path / "bn"
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_AUTH_MODE="disabled")
    driver = subprocess.Popen(sweep_cmd(synth_shards, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env, start_new_session=True)
    deadline = time.time() + 400
    while not any(s.get("status") == "finished" for s in trial_states(folder).values()):
        assert driver.poll() is None and time.time() < deadline, driver.communicate()[0][-5000:]
        time.sleep(0.5)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and everything it started, at once
    driver.wait()
    before = trial_states(folder)
    finished_before = {k for k, s in before.items() if s.get("status") == "finished"}
    assert len(finished_before) < len(BOTTLENECKS), "the kill came too late to test anything"

    rerun = subprocess.run(sweep_cmd(synth_shards, tmp_path), capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-5000:] + rerun.stderr[-5000:]
    assert "continuing sweep bn" in rerun.stdout + rerun.stderr

    after = trial_states(folder)
    assert set(after) == {f"bottleneck-{b}" for b in BOTTLENECKS}
    for key in finished_before:  # a finished trial is neither retrained nor touched
        assert after[key]["starts"] == 1 and after[key] == before[key]
    with open(folder / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["bottleneck"]) for r in rows] == list(BOTTLENECKS)
    assert {r["status"] for r in rows} <= {"finished", "stopped early"} and "finished" in {r["status"] for r in rows}
    params = [int(r["adapter_params"]) for r in rows]
    assert params == sorted(params) and params[0] > 0
    for r in rows:
        assert 0 < float(r["trainable_share"]) < 1 and 0 <= float(r["best_val_accuracy"]) <= 1
        assert int(r["steps"]) in (2, 4) and float(r["wall_time_s"]) > 0
        if r["status"] == "finished":
            assert int(r["steps"]) == 4
    md = (folder / "results.md").read_text()
    assert md.startswith("| bottleneck | adapter_params |") and md.count("\n") == 2 + len(BOTTLENECKS)
    assert (folder / "accuracy_vs_params.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| bottleneck |" in rerun.stdout  # the table is printed too
