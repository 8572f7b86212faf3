"""What the loop needs from the data: train batches from a position, eval batches, the task's codecs.

``ShardData`` binds the config and the task to the streaming loaders of ``avpea_dist.data.loaders``: it reads
the shard manifest, builds the run's task from it (``tasks.registry.build_task``: the schema and the task's
own checks), and hands ``task.codec(split, epoch)`` to the loaders. Anything with ``epoch_batches``,
``train_batches`` and ``eval_batches`` can stand in (the tests of the loop's arithmetic use in-memory
batches); a stand-in without ``task`` gets the config's task built without a manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Protocol

from ..config import Config

if TYPE_CHECKING:
    from ..tasks.base import Task


class DataSource(Protocol):
    epoch_batches: int

    def train_batches(self, epoch: int, start_batch: int) -> Iterable[dict[str, Any]]: ...

    def eval_batches(self, split: str) -> Iterable[dict[str, Any]]: ...


class ShardData:
    def __init__(self, cfg: Config, rank: int, world_size: int, task: "Task | None" = None) -> None:
        from ..data.manifest import default_epoch_batches, read_manifest
        from ..tasks.registry import build_task

        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.dir = Path(cfg.data.shards)
        self.manifest = read_manifest(self.dir)
        self.task = task or build_task(cfg, self.manifest)
        self.epoch_batches = cfg.data.epoch_batches or default_epoch_batches(
            self.manifest, "train", cfg.data.batch_size, world_size)

    def train_batches(self, epoch: int, start_batch: int) -> Iterable[dict[str, Any]]:
        from ..data.loaders import make_train_loader

        d = self.cfg.data
        return make_train_loader(self.dir, batch_size=d.batch_size, img_size=self.cfg.model.img_size,
                                 num_workers=d.num_workers, shuffle_buffer=d.shuffle_buffer, seed=self.cfg.train.seed,
                                 rank=self.rank, world_size=self.world_size, epoch=epoch,
                                 epoch_batches=self.epoch_batches, start_batch=start_batch,
                                 codec=self.task.codec("train", epoch))

    def eval_batches(self, split: str) -> Iterable[dict[str, Any]]:
        from ..data.loaders import make_eval_loader

        return make_eval_loader(self.dir, split, batch_size=self.cfg.eval.batch_size,
                                img_size=self.cfg.model.img_size, num_workers=self.cfg.data.num_workers,
                                rank=self.rank, world_size=self.world_size, codec=self.task.codec(split, 0))

    def label_histogram(self, split: str) -> list[int] | None:
        hist = self.manifest["splits"].get(split, {}).get("segment_histogram")
        return list(hist) if hist else None
