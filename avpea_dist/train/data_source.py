"""What the loop needs from the data: train batches from a position, eval batches, the task's codecs.

``ShardData`` binds the config and the task to the streaming loaders of ``avpea_dist.data.loaders``: it reads
the shards' description (``data.manifest.read_description``: the manifest without its per-shard and per-skip
lists, from ``index.json``), builds the run's task from it (``tasks.registry.build_task``: the schema and the task's
own checks), resolves the global batch into this rank's micro-batch and accumulation (``batching``), and
hands ``task.codec(split, epoch)`` to the loaders. Anything with ``epoch_batches`` (global batches per
epoch), ``train_batches`` and ``eval_batches`` can stand in (the tests of the loop's arithmetic use in-memory
batches); a stand-in without ``task`` gets the config's task built without a manifest.

Every split the job will read is checked when the source is made, before the model is built or a step is
taken: a run must not learn after 100 steps (or hours) that its val split is empty.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Protocol

from .. import storage
from ..config import Config, ConfigError

if TYPE_CHECKING:
    from ..tasks.base import Task


class DataSource(Protocol):
    epoch_batches: int
    """Global batches per virtual epoch."""
    grad_accum: int
    """This rank's micro-batches per global batch (a stand-in without it: ``optim.grad_accum``)."""

    def train_batches(self, epoch: int, start_batch: int) -> Iterable[dict[str, Any]]:
        """This rank's micro-batches of global batches ``start_batch..`` of the epoch, ``grad_accum`` each."""
        ...

    def eval_batches(self, split: str) -> Iterable[dict[str, Any]]: ...


class ShardData:
    """The shards of ``cfg.data.shards`` for one rank. ``splits``: the splits the job reads, each checked
    to hold samples (default: a training run's, train, val and ``eval.final_split``)."""

    def __init__(self, cfg: Config, rank: int, world_size: int, task: "Task | None" = None,
                 splits: tuple[str, ...] | None = None) -> None:
        from ..data.epoch_plan import epoch_global_batches
        from ..data.manifest import read_description
        from ..tasks.registry import build_task

        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        d = cfg.data
        storage.configure(retries=d.storage_retries, backoff_s=d.storage_backoff_s, timeout_s=d.storage_timeout_s,
                          cache_dir=d.cache_dir, cache_bytes=d.cache_bytes,
                          signed_reads=d.storage_signed_reads)  # the loader workers get them with the stream
        self.dir = d.shards if storage.is_url(d.shards) else Path(d.shards)
        if not d.shards or not (storage.is_url(d.shards) or self.dir.is_dir()):
            raise FileNotFoundError(missing_shards(cfg.data.shards))
        self.manifest = read_description(self.dir)  # a few kB at any size (the manifest: ~100 MB at 2M)
        self.task = task or build_task(cfg, self.manifest)
        if splits is None:
            splits = ("train", "val") + (() if cfg.eval.final_split == "none" else (cfg.eval.final_split,))
        for split in dict.fromkeys(splits):
            problem = split_problem(self.manifest, split, self.dir)
            if problem:
                raise ValueError(problem)
        self.global_batch, self.micro_batch, self.grad_accum = batching(cfg, world_size)
        self.sampling = cfg.data.sampling
        samples = int(self.manifest["splits"]["train"]["samples"])
        if self.sampling == "balanced" and cfg.data.epoch_samples:
            samples = cfg.data.epoch_samples  # a balanced epoch's draws
        self.epoch_batches = epoch_global_batches(samples, self.global_batch, cfg.data.epoch_batches)

    def train_batches(self, epoch: int, start_batch: int) -> Iterable[dict[str, Any]]:
        from ..data.loaders import make_train_loader

        d = self.cfg.data
        return make_train_loader(self.dir, batch_size=self.micro_batch, img_size=self.cfg.model.img_size,
                                 num_workers=d.num_workers, shuffle_buffer=d.shuffle_buffer, seed=self.cfg.train.seed,
                                 rank=self.rank, world_size=self.world_size, epoch=epoch,
                                 epoch_batches=self.epoch_batches, start_batch=start_batch,
                                 global_batch=self.global_batch, sampling=self.sampling,
                                 codec=self.task.codec("train", epoch))

    def eval_batches(self, split: str) -> Iterable[dict[str, Any]]:
        from ..data.loaders import make_eval_loader

        return make_eval_loader(self.dir, split, batch_size=self.cfg.eval.batch_size,
                                img_size=self.cfg.model.img_size, num_workers=self.cfg.data.num_workers,
                                rank=self.rank, world_size=self.world_size, codec=self.task.codec(split, 0))

    def label_histogram(self, split: str) -> list[int] | None:
        hist = self.manifest["splits"].get(split, {}).get("segment_histogram")
        return list(hist) if hist else None


def batching(cfg: Config, world_size: int) -> tuple[int, int, int]:
    """(global batch, micro-batch, accumulation steps) of one rank at ``world_size``: ``data.global_batch``
    (0: world x data.batch_size x optim.grad_accum) split by ``epoch_plan.split_global_batch`` with
    ``data.batch_size`` as the micro-batch cap; a world size that cannot divide it is one ConfigError."""
    from ..data.epoch_plan import resolve_global_batch, split_global_batch

    g = resolve_global_batch(cfg.data.global_batch, world_size, cfg.data.batch_size, cfg.optim.grad_accum)
    try:
        micro, accum = split_global_batch(g, world_size, cfg.data.batch_size)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return g, micro, accum


_USES = {"train": "the run trains on it",
         "val": "the run validates on it (every train.eval_every steps and at the last) to keep the best model"}


def missing_shards(shards: str) -> str:
    """The line for a data.shards that is not a folder (never 'rebuild': the shards may be elsewhere)."""
    if not shards:
        return "data.shards is not set; pass data.shards=DIR, the folder `avpea shards build` wrote"
    where = "" if os.path.isabs(shards) else f" (relative to the working folder {os.getcwd()})"
    return (f"data.shards={shards!r} is not a folder{where}; point data.shards at the folder `avpea shards "
            f"build` wrote (it holds manifest.json), e.g. with an absolute path")


def split_problem(manifest: dict[str, Any], split: str, shards: Path) -> str:
    """One line when ``split`` of the shards holds no sample (why, and the fix); '' when it has samples.
    ``manifest``: the manifest or its description (``data.manifest.describe``)."""
    s = manifest["splits"].get(split)
    if s is not None and s.get("shards"):
        return ""
    if s is None:
        why = f"the shards have no '{split}' split (they have: {', '.join(manifest['splits']) or 'none'})"
    elif not s.get("records"):
        why = f"the release lists no {split} record"
    else:
        first = (s.get("first_skip") if "first_skip" in s else (s.get("skipped") or [None])[0]) or {}
        why = (f"all {s['records']} of its records were skipped, the first because: "
               f"{str(first.get('reason', '?'))[:200]}")
    use = _USES.get(split, "the run evaluates it once at the end (eval.final_split)")
    fix = ("rebuild the shards so that it holds samples (every skip reason: `avpea shards inspect "
           f"{shards}`)")
    if split not in _USES:
        fix += " or set eval.final_split=none" + (" (or val)" if split != "val" else "")
    return f"data.shards={str(shards)!r}: split '{split}' holds no sample: {why}; {use}; {fix}"
