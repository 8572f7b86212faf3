"""The tiny run every fault-injection test starts from, and checks that do not trust the code under test.

Runs are tiny on purpose (ViT-Tiny on 32x32 frames, visual stream, 2 clips per rank per step, 8 steps,
a checkpoint every 2 steps, keep_checkpoints=1) so that dozens of real 2-rank jobs fit the CI budget;
the faults hit the same code paths as in a full-size run. Checkpoint completeness is judged here by
plain hashing, not by ``avpea_dist.train.checkpoint``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from faultkit import REPO, Job

CONFIG = str(REPO / "configs" / "avel_tiny.yaml")
STEPS = 8
TIMEOUT_S = 30  # dist.timeout_s of every test job: the bound on detecting a dead rank
DETECT_BOUND_S = TIMEOUT_S + 15  # survivors must be gone this long after the death at the latest


# ZeRO-2 (the default stage): every rank writes its own optimizer partition into each checkpoint.
# deterministic=false with it: deterministic mode NaN-fills ZeRO-2's 2 GB reduce bucket every step (docs).
ZERO2 = ("dist.zero_stage=2", "train.deterministic=false")


def tiny_overrides(shards: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.shards={shards}", f"train.out={out}", "model.img_size=32", "model.modalities=visual",
            f"train.steps={STEPS}", "train.eval_every=4", "train.ckpt_every=2", "train.log_every=1",
            "train.keep_checkpoints=1", "data.batch_size=2", "data.num_workers=0", "data.shuffle_buffer=16",
            "eval.batch_size=4", "eval.final_split=none", "train.deterministic=true", "train.progress=false",
            "optim.warmup_steps=2", f"dist.timeout_s={TIMEOUT_S}", "dist.zero_stage=0", *extra]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def complete_checkpoint(folder: Path, world: int = 2) -> bool:
    """A manifest exists, lists every rank's files, and every listed file has the listed hash."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not {f"rank_{r}.json" for r in range(world)} <= set(files):
        return False
    return all((folder / n).is_file() and _sha256(folder / n) == digest for n, digest in files.items())


def checkpoint_steps(run: Path) -> tuple[list[int], list[int]]:
    """(steps of complete checkpoints, steps of incomplete folders) under RUN/checkpoints."""
    root = run / "checkpoints"
    complete, partial = [], []
    for folder in sorted(root.glob("step_*")) if root.is_dir() else []:
        (complete if complete_checkpoint(folder) else partial).append(int(folder.name.split("_")[1]))
    return complete, partial


def latest_pointer(run: Path) -> str | None:
    path = run / "checkpoints" / "latest"
    return path.read_text().strip() if path.is_file() else None


def train_records(run: Path) -> list[dict[str, Any]]:
    """Every metrics line minus wall-clock fields: what an exact resume must reproduce."""
    out = []
    path = run / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        out.append({k: v for k, v in rec.items() if k not in ("time", "clips_per_s")})
    return out


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in train_records(run) if r.get("split") == "train" and "loss" in r}


def adapter_tensors(path: Path) -> dict[str, bytes]:
    from safetensors.torch import load_file

    return {k: v.numpy().tobytes() for k, v in load_file(str(path)).items()}


def consumed_batches(jobs: list[Job], rank: int) -> dict[tuple[int, int], list[str]]:
    """(epoch, batch index) -> sample keys that the chain of jobs trained on, a later job's fetch of a
    position replacing an earlier one's (the earlier one was undone by the restart)."""
    out: dict[tuple[int, int], list[str]] = {}
    for job in jobs:
        for e in job.events(rank, "batch"):
            out[(e["epoch"], e["index"])] = e["keys"]
    return out


def survivors_exit_within(job: Job, bound_s: float) -> float:
    """Seconds between the first rank's death and the last rank's exit; asserts the bound."""
    ranks = job.report["ranks"]
    first = min(r["t_exit"] for r in ranks)
    last = max(r["t_exit"] for r in ranks)
    assert last - first <= bound_s, f"a rank outlived the dead one by {last - first:.1f} s\n{job.describe()}"
    return last - first

