"""One config trained from scratch at 1, 2 and 3 real ranks (torchrun, gloo, real shards) sees the same global
batches step by step and logs the same per-step losses within float reduction-order tolerance; `avpea run
samples --check` passes on each run and fails on a run that saw a sample twice.

Tolerance: every rank's loss and gradient are sums of the same fp32 terms in another order (3 or 2 clips per
micro-batch, 1 or 2 accumulation steps, 1-3 ranks averaged by all-reduce), so each step's values differ by a
few ulps (fp32: ~1e-7 relative), and AdamW carries that difference into the next steps' weights. Over the 7
steps of this tiny run the worst difference measured was 1.1e-7 relative (3 ranks vs 1, 2026-12-06); the
test allows rel 1e-5 / abs 1e-6: 100x that, and far below any change of data (another batch moves the loss
by ~1e-2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainkit import REPO, TINY, free_port

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

STEPS, GLOBAL = 7, 6  # 34 train clips: 5 global batches an epoch, so the run crosses into epoch 1
RTOL, ATOL = 1e-5, 1e-6


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": REPO}


def _train(shards: Path, out: Path, ranks: int) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-port",
           str(free_port()), "-m", "avpea_dist.train.entry", TINY, f"data.shards={shards}", f"train.out={out}",
           "model.img_size=32", f"data.global_batch={GLOBAL}", "data.batch_size=3", "data.num_workers=0",
           f"train.steps={STEPS}", "train.eval_every=100", "train.ckpt_every=100", "train.log_every=1",
           "train.log_samples=true", "train.deterministic=true", "train.progress=false", "eval.final_split=none",
           "eval.batch_size=8", "optim.warmup_steps=2", "dist.timeout_s=60"]
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _losses(out: Path) -> list[float]:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if r.get("split") == "train" and "loss" in r]


def _batches(out: Path) -> list[tuple[int, int, list[str]]]:
    lines = [json.loads(x) for e in (0, 1) for x in (out / "samples" / f"epoch_{e}.jsonl").read_text().splitlines()]
    return [(r["epoch"], r["step"], r["keys"]) for r in lines]


def _check(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avpea_dist.cli", "run", "samples", str(out), "--check"], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=120)


@pytest.mark.timeout(1500)
def test_fresh_runs_at_1_2_3_ranks_see_the_same_global_batches_and_losses(synth_shards: Path, tmp_path: Path) -> None:
    runs = {w: tmp_path / f"w{w}" for w in (1, 2, 3)}
    for w, out in runs.items():
        _train(synth_shards, out, w)
    ref = _batches(runs[1])
    assert len(ref) == STEPS and all(len(keys) == GLOBAL for _, _, keys in ref)
    assert [e for e, _, _ in ref] == [0] * 5 + [1] * 2
    losses = {w: _losses(out) for w, out in runs.items()}
    for w in (2, 3):
        assert _batches(runs[w]) == ref, f"{w} ranks saw other global batches"
        lines = [json.loads(x) for x in (runs[w] / "samples" / "epoch_0.jsonl").read_text().splitlines()]
        assert {r["world_size"] for r in lines} == {w}
        worst = max(abs(a - b) / abs(a) for a, b in zip(losses[1], losses[w]))
        assert losses[w] == pytest.approx(losses[1], rel=RTOL, abs=ATOL), f"{w} ranks: worst relative {worst:.2e}"
    for out in runs.values():
        done = _check(out)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "epoch 0 (finished, 5 steps): 30 distinct / 34 in the split, 0 repeats, 0 missing" in done.stdout
        assert "epoch 1 (in progress, 2 steps): 12 distinct / 34 in the split, 0 repeats" in done.stdout
    # A run that saw a sample twice is caught.
    path = runs[2] / "samples" / "epoch_0.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    lines[1]["keys"][0] = lines[0]["keys"][0]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    done = _check(runs[2])
    assert done.returncode == 1 and "1 repeats" in done.stdout and "PROBLEM" in done.stdout, done.stdout
