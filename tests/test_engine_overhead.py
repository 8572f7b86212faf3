"""benchmarks/engine_overhead.py runs end to end (tiny structure, 1 and 2 real ranks, ZeRO 0-2) and records
what it measured, so the benchmark cannot rot between its real runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_engine_overhead_benchmark_records_every_stage_and_rank_count(tmp_path):
    out = tmp_path / "overhead.json"
    env = dict(os.environ, DS_ACCELERATOR="cpu", PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "benchmarks/engine_overhead.py", "--tiny", "--steps", "1", "--rounds", "2",
                          "--warmup", "0", "--threads", "2", "--json", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=380)
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads(out.read_text())
    assert set(record["ratios"]) == set(record["cpu_time_ratios"]) == {"zero0", "zero1", "zero2"}
    rows = record["rows"]
    assert sorted((r["zero_stage"], r["ranks"]) for r in rows) == [(s, w) for s in (0, 1, 2) for w in (1, 2)]
    for r in rows:
        assert len(r["plain_times_s"]) == 3 and len(r["system_times_s"]) == 2  # plain before and after
        assert r["ratio"] == pytest.approx(r["system"]["median_s"] / r["plain"]["median_s"])
    for stage in (0, 1, 2):
        assert record["ratios"][f"zero{stage}"] == max(r["ratio"] for r in rows if r["zero_stage"] == stage)
    assert record["machine"]["cores"] and len(record["machine"]["loadavg_before"]) == 3
    assert "worst ratio over rank counts" in run.stdout
