"""benchmarks/step.py runs its real code paths end to end on CPU and records what it measured."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_step_benchmark_runs_every_variant_on_cpu(tmp_path):
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", MASTER_PORT="29563")
    out = subprocess.run(
        [sys.executable, "benchmarks/step.py", "--config", "configs/avel_tiny.yaml", "--device", "cpu",
         "--batch", "1", "--steps", "2", "--warmup", "1", "--matmul-size", "256", "--no-compile",
         "--max-batch", "0", "--out", str(tmp_path), "model.img_size=32", "model.num_segments=2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=580)
    assert out.returncode == 0, out.stderr[-3000:]
    (path,) = tmp_path.glob("*-cpu.json")
    record = json.loads(path.read_text())
    assert record["device"] == "cpu"
    assert [v["variant"] for v in record["variants"]] == ["reference", "bf16_frozen", "fused_streams", "system"]
    for v in record["variants"]:
        assert v["flops_per_step"] > 0 and v["step_s_median"] > 0 and v["mfu"] > 0
    assert record["clips_per_s"] == record["variants"][-1]["clips_per_s"]
    assert record["reference_clips_per_s"] == record["variants"][0]["clips_per_s"]
    assert "system / reference" in out.stdout
