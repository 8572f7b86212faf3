"""`avpea demo --task avqa` end to end on a toy budget: synthetic set, real build, three torchrun trainings,
the per-kind table, summary.json, and a rerun that reuses everything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.distributed]
REPO = Path(__file__).resolve().parents[2]


def test_avqa_demo_writes_the_summary_and_the_table(tmp_path):
    out = tmp_path / "demo"
    # One rank per run and two steps: the demo's learning is measured in docs (the AVQA demo section).
    cmd = [sys.executable, "-m", "avpea_dist.cli", "demo", "--task", "avqa", "--out", str(out), "--clips", "12",
           "--nproc", "1", "model.img_size=32", "data.batch_size=2", "train.steps=2", "train.eval_every=2",
           "train.ckpt_every=2", "eval.batch_size=4", "train.progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "TQDM_DISABLE": "1"}
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode in (0, 1), p.stdout[-2000:] + p.stderr[-3000:]  # 1: ran, but 2 steps cannot show fusion
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] == (p.returncode == 0) and summary["train_seconds"] > 0
    acc = summary["test_accuracy"]
    assert set(acc) == {"av_pea", "audio_only", "visual_only", "majority"}
    for column in acc.values():
        assert set(column) == {"overall", "audio", "visual", "audio_visual"}
        assert all(v is None or 0.0 <= v <= 1.0 for v in column.values())
    manifest = json.loads((out / "data" / "shards" / "manifest.json").read_text())
    assert summary["test_questions"]["overall"] == manifest["splits"]["test"]["questions"]
    for name in ("av_pea", "audio_only", "visual_only"):
        result = json.loads((out / "runs" / name / "result.json").read_text())
        assert result["status"] == "finished" and result["test_overall"] == pytest.approx(acc[name]["overall"], abs=1e-4)
        assert result["test_metrics"]["questions"] == manifest["splits"]["test"]["questions"]
    rows = {line.split()[0]: line.split()[1:] for line in p.stdout.splitlines() if line.strip()}
    assert rows["av_pea"] == ["audio_only", "visual_only", "majority"]  # the table's header line
    assert len(rows["audio_visual_temporal"]) == 4 and len(rows["overall"]) == 4
    # A rerun reuses the finished runs and the built shards instead of training again.
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=200)
    assert again.stdout.count("reusing the finished run") == 3, again.stdout[-2000:]
    assert "reused the 3 finished runs" in again.stdout
