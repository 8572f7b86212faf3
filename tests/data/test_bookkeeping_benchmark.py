"""benchmarks/build_bookkeeping.py runs end to end at a small size and records what it measured."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bookkeeping_benchmark_small(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, "benchmarks/build_bookkeeping.py", "--records", "300", "1200", "--shard-size",
                        "16", "--json", str(out), "--workdir", str(tmp_path / "work")], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    assert set(rec["seconds_per_1000_shards"]) == set(rec["peak_mb"]) == {"300", "1.2k"}
    small, large = rec["builds"]["300"], rec["builds"]["1.2k"]
    # 90/5/5 % splits cut into shards of 16: ceil per split
    assert (small["shards"], large["shards"]) == (17 + 1 + 1, 68 + 4 + 4)
    assert all(v > 0 for v in [*rec["seconds_per_1000_shards"].values(), *rec["peak_mb"].values()])
    assert rec["reader"]["samples"] == 1200 and rec["reader"]["labels"] is True
    assert 0 < rec["reader_startup_s"] and 0 < rec["reader_startup_mb"]
    assert rec["machine"]["cores"] and "load_average_1m_start" in rec["machine"]
    assert set(rec["goal"]) >= {"seconds_ratio", "peak_mb_ratio", "met"}
    shards = tmp_path / "work" / "1.2k" / "shards"
    assert (shards / "index.json").is_file() and len(list((shards / "parts").iterdir())) == 1
