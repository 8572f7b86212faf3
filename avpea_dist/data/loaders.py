"""DataLoaders over the two streams: the training loader (global batches, resumable at any world size) and the
eval loader (exactly once).

The caller passes the run's task's codec (``task.codec(split, epoch)``): the data layer has no default task.
Workers start from ``worker_context`` (forkserver, the streams' modules preloaded).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, IterableDataset

from . import worker_context
from .stream import EvalStream
from .train_stream import TrainStream

if TYPE_CHECKING:
    from .codec import SampleCodec

__all__ = ["make_train_loader", "make_eval_loader"]


def _loader(dataset: IterableDataset, num_workers: int) -> DataLoader:
    if num_workers < 0:
        raise ValueError(f"num_workers={num_workers} must be >= 0")
    return DataLoader(dataset, batch_size=None, num_workers=num_workers,
                      multiprocessing_context=worker_context() if num_workers else None,
                      pin_memory=torch.cuda.is_available())


def make_train_loader(shards_dir: str | Path, *, codec: SampleCodec, batch_size: int, img_size: int,
                      num_workers: int, shuffle_buffer: int, seed: int, rank: int, world_size: int, epoch: int,
                      epoch_batches: int, start_batch: int = 0, global_batch: int | None = None,
                      sampling: str = "sequential") -> DataLoader:
    """This rank's micro-batches (``batch_size`` clips) of global batches ``start_batch..epoch_batches - 1`` of
    the epoch (``len()`` says how many), a pure function of the arguments and the same global batches at any
    ``world_size`` and ``num_workers`` (``train_stream``). ``global_batch`` defaults to ``batch_size *
    world_size`` (one micro-batch per rank per global batch); ``codec`` (the task's, for this epoch) turns each
    sample's json into the batch's task fields."""
    if num_workers < 0:
        raise ValueError(f"num_workers={num_workers} must be >= 0")
    return _loader(TrainStream(shards_dir, batch_size=batch_size, img_size=img_size, shuffle_buffer=shuffle_buffer,
                               seed=seed, rank=rank, world_size=world_size, epoch=epoch, epoch_batches=epoch_batches,
                               start_batch=start_batch, global_batch=global_batch, sampling=sampling, codec=codec),
                   num_workers)


def make_eval_loader(shards_dir: str | Path, split: str, *, codec: SampleCodec, batch_size: int, img_size: int,
                     num_workers: int, rank: int, world_size: int) -> DataLoader:
    """Every sample of ``split`` exactly once across ranks; corrupt ones (and those ``codec`` refuses) counted
    in ``skipped``."""
    return _loader(EvalStream(shards_dir, split, batch_size=batch_size, img_size=img_size, rank=rank,
                              world_size=world_size, codec=codec), num_workers)
