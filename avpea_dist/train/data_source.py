"""What the loop needs from the data: train batches from a position, eval batches, label histograms.

``ShardData`` binds the config to the streaming loaders of ``avpea_dist.data.stream``. Anything with the
same three methods can stand in (the tests of the loop's arithmetic use in-memory batches).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Protocol

from ..config import Config, ConfigError


class DataSource(Protocol):
    epoch_batches: int

    def train_batches(self, epoch: int, start_batch: int) -> Iterable[dict[str, Any]]: ...

    def eval_batches(self, split: str) -> Iterable[dict[str, Any]]: ...

    def label_histogram(self, split: str) -> list[int] | None: ...


class ShardData:
    def __init__(self, cfg: Config, rank: int, world_size: int) -> None:
        from ..data.stream import default_epoch_batches, read_manifest

        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.dir = Path(cfg.data.shards)
        self.manifest = read_manifest(self.dir)
        classes = self.manifest["classes"]
        if cfg.model.num_classes != len(classes):
            raise ConfigError(f"model.num_classes={cfg.model.num_classes} but the shards in '{self.dir}' have "
                              f"{len(classes)} classes ({len(classes) - 1} events + background); set "
                              f"model.num_classes={len(classes)}")
        self.epoch_batches = cfg.data.epoch_batches or default_epoch_batches(
            self.manifest, "train", cfg.data.batch_size, world_size)

    def train_batches(self, epoch: int, start_batch: int) -> Iterable[dict[str, Any]]:
        from ..data.stream import make_train_loader

        d = self.cfg.data
        return make_train_loader(self.dir, batch_size=d.batch_size, img_size=self.cfg.model.img_size,
                                 num_workers=d.num_workers, shuffle_buffer=d.shuffle_buffer, seed=self.cfg.train.seed,
                                 rank=self.rank, world_size=self.world_size, epoch=epoch,
                                 epoch_batches=self.epoch_batches, start_batch=start_batch)

    def eval_batches(self, split: str) -> Iterable[dict[str, Any]]:
        from ..data.stream import make_eval_loader

        return make_eval_loader(self.dir, split, batch_size=self.cfg.eval.batch_size,
                                img_size=self.cfg.model.img_size, num_workers=self.cfg.data.num_workers,
                                rank=self.rank, world_size=self.world_size)

    def label_histogram(self, split: str) -> list[int] | None:
        hist = self.manifest["splits"].get(split, {}).get("segment_histogram")
        return list(hist) if hist else None
