"""`avpea demo` end to end on a toy budget: data, three torchrun trainings, the table, summary.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from trainkit import REPO

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def test_demo_writes_the_summary_and_the_table(tmp_path):
    out = tmp_path / "demo"
    # One rank per run and a handful of steps: the real demo's learning is measured in the README (Training).
    cmd = [sys.executable, "-m", "avpea_dist.cli", "demo", "--out", str(out), "--clips", "24", "--nproc", "1",
           "model.img_size=32", "train.steps=3", "train.eval_every=3", "train.ckpt_every=3", "eval.batch_size=4",
           "train.progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "TQDM_DISABLE": "1"}
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode in (0, 1), p.stderr[-3000:]  # 1: ran, but 3 steps cannot show fusion
    summary = json.loads((out / "summary.json").read_text())
    acc = summary["test_accuracy"]
    assert set(acc) == {"av_pea", "majority", "audio_only", "visual_only"}
    assert all(0.0 <= v <= 1.0 for v in acc.values()) and summary["train_seconds"] > 0
    assert summary["ok"] == (p.returncode == 0)
    assert "majority class" in p.stdout and "AV-PEA" in p.stdout
    for name in ("av_pea", "audio_only", "visual_only"):
        result = json.loads((out / "runs" / name / "result.json").read_text())
        assert result["status"] == "finished" and result["test_accuracy"] == acc[name]
    # A rerun reuses the finished runs and the built shards instead of training again.
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=200)
    assert again.stdout.count("reusing the finished run") == 3, again.stdout[-2000:]
    assert "reused the 3 finished runs" in again.stdout and "training + evaluation: 0 s" not in again.stdout
