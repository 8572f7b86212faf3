"""Small real pieces for the training tests: a tiny config, in-memory batches, a 2-rank spawner."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import torch
import torch.multiprocessing as mp

from avpea_dist.config import Config

from avpea_dist.config_load import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "configs", "avel_tiny.yaml")
VITL = os.path.join(REPO, "configs", "avel_vitl.yaml")
# The paper configuration's structure at inputs a CPU steps through in seconds (tests/train/test_paper_*.py).
SMALL = ["model.pretrained=none", "model.img_size=32", "model.mel_bins=32", "model.audio_frames=32",
         "data.batch_size=1", "data.num_workers=0", "train.progress=false", "dist.timeout_s=120"]
PAPER_STEPS = 4


def tiny_config(*overrides: str) -> Config:
    """ViT-Tiny at 32x32 frames and a 32x32 spectrogram: every code path, a fraction of the cost."""
    return load_config(TINY, ["model.img_size=32", "model.mel_bins=32", "model.audio_frames=32",
                              "model.num_segments=2", "data.batch_size=2", "data.num_workers=0",
                              "train.progress=false", "dist.timeout_s=60", *overrides])


def model_and_task(cfg: Config, load_weights: bool = True) -> tuple[Any, Any]:
    """The config's model (encoder + its task's head) and its task, built without shards as ``avpea predict``
    does (AVEL takes its class count from ``avel.num_classes``)."""
    from avpea_dist.models.model import build_model
    from avpea_dist.tasks.registry import build_task

    task = build_task(cfg, None)
    return build_model(cfg.model, load_weights, task=task), task


def fake_batch(cfg: Config, seed: int, nan: bool = False) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    m, B, T = cfg.model, cfg.data.batch_size, cfg.model.num_segments
    audio = torch.randn(B, T, m.mel_bins, m.audio_frames, generator=g)
    if nan:
        audio[0, 0, 0, 0] = float("nan")
    return {"frames": torch.randint(0, 256, (B, T, 3, m.img_size, m.img_size), dtype=torch.uint8, generator=g),
            "audio": audio, "labels": torch.randint(0, cfg.avel.num_classes, (B, T), generator=g),
            "key": [f"clip{seed}_{i}" for i in range(B)], "skipped": 0}


class MemoryData:
    """A DataSource of deterministic in-memory batches, per rank: ``epoch_batches`` global batches an epoch,
    each ``optim.grad_accum`` micro-batches of this rank (micro-batch position = (epoch, k))."""

    def __init__(self, cfg: Config, rank: int, epoch_batches: int = 4, eval_batches: int = 2,
                 nan_at: set[int] = frozenset(), bad_per_batch: int = 0) -> None:
        self.cfg, self.rank, self.epoch_batches, self.n_eval = cfg, rank, epoch_batches, eval_batches
        self.grad_accum = cfg.optim.grad_accum
        self.nan_at, self.bad_per_batch = nan_at, bad_per_batch
        self.consumed = 0

    def train_batches(self, epoch: int, start_batch: int):
        per_epoch = self.epoch_batches * self.grad_accum
        for k in range(start_batch * self.grad_accum, per_epoch):
            pos = epoch * per_epoch + k
            b = fake_batch(self.cfg, 1000 * self.rank + pos, nan=pos in self.nan_at)
            b["skipped"] = self.bad_per_batch
            self.consumed += 1
            yield b

    def eval_batches(self, split: str):
        for k in range(self.n_eval):
            yield fake_batch(self.cfg, 10_000 + 100 * self.rank + k)

    def label_histogram(self, split: str):
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, fn: Callable, args: tuple, queue: Any) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    try:
        queue.put((rank, "ok", fn(rank, *args)))
    except BaseException as e:  # report, so the test shows the rank's error instead of a bare exit code
        queue.put((rank, "error", f"{type(e).__name__}: {e}"))


def run_ranks(fn: Callable, *args: Any, world: int = 2, timeout: float = 240) -> dict[int, Any]:
    """Run ``fn(rank, *args)`` on ``world`` real processes (gloo); returns {rank: result} or raises."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, fn, args, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    errors = []
    try:
        for _ in range(world):
            rank, status, value = queue.get(timeout=timeout)
            if status == "ok":
                results[rank] = value
            else:
                errors.append(f"rank {rank}: {value}")
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    if errors:
        raise AssertionError("; ".join(errors))
    return results


def paper_start(out: Path, log: Path, ranks: int, *extra: str) -> subprocess.Popen:
    """``ranks`` ranks of configs/avel_vitl.yaml (SMALL inputs) under torchrun on ``elastic_rank.py``'s
    world-independent data (global batch 2): PAPER_STEPS steps, checkpoints every 2, the newest 2 kept."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-port",
           str(free_port()), os.path.join(REPO, "tests", "train", "elastic_rank.py"), "2", VITL, *SMALL,
           f"train.out={out}", f"train.steps={PAPER_STEPS}", "train.ckpt_every=2", f"train.eval_every={PAPER_STEPS}",
           "train.log_every=1", "train.keep_checkpoints=2", "eval.final_split=none", "optim.warmup_steps=1", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": REPO}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
