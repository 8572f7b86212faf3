"""Stream shards to ranks: an exact, deterministic training pipeline and an exactly-once eval pipeline.

Training, per rank: the DataLoader's W worker slots each run one *virtual stream* v (global batch j belongs
to stream j % W, as its (j // W)-th batch). A stream is a WebDataset-style pipeline with its own RNG seeded
by (seed, epoch, rank, v): resampled shards -> raw samples -> shuffle buffer of raw bytes -> decode -> batch.
Batch k of a stream is always raw items [kB, (k+1)B) of that stream, so

* every rank yields exactly ``epoch_batches - start_batch`` batches, whatever the shard and worker counts;
* ``start_batch=k`` skips k batches by reading raw bytes only (no JPEG decode) and is exact;
* a corrupt sample is replaced by a draw from an RNG keyed by (stream, batch, slot, attempt), so repairs
  never shift later batches; each failure is counted in the batch's ``skipped``.

Evaluation: the split's samples, in manifest order, are cut into contiguous ranges per rank and per worker
(positions within shards, from the manifest's counts), so each is decoded exactly once across all ranks;
corrupt or missing ones are counted in ``skipped`` instead.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from . import exit_with, worker_context
from .ave import NUM_SEGMENTS
from .features import load_npy, normalise_fbank
from .manifest import (FBANK_FRAMES, FIX, FRAME_MEMBERS, MANIFEST, MEL_BINS, MEMBERS, default_epoch_batches,
                       read_manifest, split_entry)
from .tario import RawSample, iter_raw_samples

__all__ = ["read_manifest", "default_epoch_batches", "make_train_loader", "make_eval_loader", "decode_sample",
           "SampleError", "TrainStream", "EvalStream"]

_MAX_REPLACEMENT_DRAWS = 64


class SampleError(Exception):
    """A sample that cannot be decoded; the reason is the message."""


# ---------------------------------------------------------------------------------------------
# Decoding one raw sample


def _jpeg(data: bytes, frame_size: int, img_size: int) -> np.ndarray:
    """JPEG bytes -> uint8 (img_size, img_size, 3). When shrinking, libjpeg decodes at a reduced DCT scale
    first (``draft``), which is several times faster than a full decode and resize."""
    im = Image.open(io.BytesIO(data))
    if im.format != "JPEG" or im.size != (frame_size, frame_size):
        raise ValueError(f"frame is {im.format} {im.size[0]}x{im.size[1]}, expected JPEG {frame_size}x{frame_size}")
    if img_size != frame_size:
        im.draft("RGB", (img_size, img_size))
        im = im.convert("RGB").resize((img_size, img_size), Image.BILINEAR)
    return np.asarray(im.convert("RGB"))


def decode_sample(raw: RawSample, *, num_classes: int, frame_size: int, img_size: int) -> dict[str, Any]:
    """Raw member bytes -> ``{frames: [10 x uint8 (S, S, 3)], audio: float32 (10, 128, 102) normalised,
    labels: int64 (10,), key}``, validated; raises ``SampleError`` for anything malformed. ``_collate``
    turns a list of these into a batch."""
    if raw.error:
        raise SampleError(raw.error)
    m = raw.members
    missing = [k for k in MEMBERS if k not in m]
    if missing:
        raise SampleError(f"sample '{raw.key}' lacks members {missing}")
    try:
        meta = json.loads(m["json"])
        labels = meta["labels"]
        if meta.get("key", meta["id"]) != raw.key:  # shards before keys per record: key = id
            raise SampleError(f"sample '{raw.key}': json key {meta.get('key', meta['id'])!r} differs from its tar key")
        if (len(labels) != NUM_SEGMENTS or not all(isinstance(x, int) and 0 <= x < num_classes for x in labels)):
            raise SampleError(f"sample '{raw.key}': labels {labels!r} are not {NUM_SEGMENTS} ints < {num_classes}")
        fbank = load_npy(m["fbank.npy"])
        if fbank.shape != (NUM_SEGMENTS, MEL_BINS, FBANK_FRAMES) or fbank.dtype != np.float16:
            raise SampleError(f"sample '{raw.key}': fbank is {fbank.dtype}{fbank.shape}, "
                              f"expected float16{(NUM_SEGMENTS, MEL_BINS, FBANK_FRAMES)}")
        audio = normalise_fbank(fbank)
        if not np.isfinite(audio).all():
            raise SampleError(f"sample '{raw.key}': fbank holds non-finite values")
        frames = [_jpeg(m[name], frame_size, img_size) for name in FRAME_MEMBERS]  # HWC, stacked by _collate
    except SampleError:
        raise
    except Exception as e:  # bad JSON, bad npy header, bad JPEG bytes...
        raise SampleError(f"sample '{raw.key}': {type(e).__name__}: {e}") from None
    return {"frames": frames, "audio": audio, "labels": torch.tensor(labels, dtype=torch.int64), "key": raw.key}


def _collate(samples: list[dict[str, Any]], skipped: int, img_size: int) -> dict[str, Any]:
    """Stack decoded samples into batch tensors with one copy per pixel. In a worker the tensors are
    allocated in shared memory, so the DataLoader's queue passes them without copying them again."""
    frames = torch.empty(len(samples), NUM_SEGMENTS, 3, img_size, img_size, dtype=torch.uint8)
    audio = torch.empty(len(samples), NUM_SEGMENTS, MEL_BINS, FBANK_FRAMES)
    if get_worker_info() is not None:
        frames.share_memory_(), audio.share_memory_()
    frames_np, audio_np = frames.numpy(), audio.numpy()  # views: numpy copies from read-only PIL buffers
    for b, s in enumerate(samples):
        for i, hwc in enumerate(s["frames"]):
            frames_np[b, i] = hwc.transpose(2, 0, 1)
        audio_np[b] = s["audio"]
    labels = torch.stack([s["labels"] for s in samples]) if samples else torch.empty(0, NUM_SEGMENTS, dtype=torch.int64)
    return {"frames": frames, "audio": audio, "labels": labels, "key": [s["key"] for s in samples], "skipped": skipped}


def _shuffle(size: int, rng: np.random.Generator):
    """A seeded shuffle buffer over an endless stream: fill ``size`` items, then emit a random one per arrival."""

    def stage(items: Iterator[RawSample]) -> Iterator[RawSample]:
        buf: list[RawSample] = []
        for item in items:
            if len(buf) < size:
                buf.append(item)
                continue
            i = int(rng.integers(size))
            buf[i], item = item, buf[i]
            yield item

    return stage


class _Base(IterableDataset):
    def __init__(self, shards_dir: str | Path, split: str, img_size: int) -> None:
        self.dir = Path(shards_dir)
        manifest = read_manifest(self.dir)
        s = split_entry(manifest, split, self.dir / MANIFEST)
        self.files = [str(self.dir / sh["file"]) for sh in s["shards"]]
        self.counts = [int(sh["samples"]) for sh in s["shards"]]
        missing = [f for f in self.files if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"shard {missing[0]} listed in {self.dir / MANIFEST} is missing "
                                    f"({len(missing)} in all); copy the whole folder again or {FIX}")
        self.num_classes = len(manifest["classes"])
        self.frame_size = int(manifest["preprocessing"]["frame_size"])
        self.img_size = img_size
        self.owner_pid = os.getpid()

    def _decode(self, raw: RawSample) -> dict[str, Any]:
        return decode_sample(raw, num_classes=self.num_classes, frame_size=self.frame_size, img_size=self.img_size)

    def _slot(self) -> tuple[int, int]:
        info = get_worker_info()
        if info is None:
            return 0, 1
        torch.set_num_threads(1)  # W workers per rank already use the cores
        exit_with(self.owner_pid)
        return info.id, info.num_workers


# ---------------------------------------------------------------------------------------------
# Training


class TrainStream(_Base):
    """Yields exactly ``epoch_batches - start_batch`` batches across the DataLoader's workers."""

    def __init__(self, shards_dir: str | Path, *, batch_size: int, img_size: int, shuffle_buffer: int, seed: int,
                 rank: int, world_size: int, epoch: int, epoch_batches: int, start_batch: int = 0) -> None:
        super().__init__(shards_dir, "train", img_size)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must lie in [0, world_size={world_size})")
        if not 0 <= start_batch <= epoch_batches:
            raise ValueError(f"start_batch={start_batch} must lie in [0, epoch_batches={epoch_batches}]")
        if batch_size < 1 or shuffle_buffer < 1:
            raise ValueError(f"batch_size={batch_size} and shuffle_buffer={shuffle_buffer} must be >= 1")
        self.batch_size, self.shuffle_buffer = batch_size, shuffle_buffer
        self.seed, self.rank, self.epoch = seed, rank, epoch
        self.epoch_batches, self.start_batch = epoch_batches, start_batch

    def __len__(self) -> int:
        return self.epoch_batches - self.start_batch

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed % 2**63, self.epoch, self.rank, *key])  # seeds may be negative

    def raw_pipeline(self, v: int) -> wds.DataPipeline:
        """Virtual stream v's raw samples: resampled shards (seeded by rank and stream: this is the node
        and worker split) -> tar members grouped into samples -> seeded shuffle of the undecoded bytes."""
        shard_rng, shuffle_rng = self._rng(v, 0), self._rng(v, 1)
        files = self.files

        def resampled() -> Iterator[str]:
            while True:
                yield files[int(shard_rng.integers(len(files)))]

        def expand(paths: Iterator[str]) -> Iterator[RawSample]:
            empty = 0
            for path in paths:
                n = 0
                for n, raw in enumerate(iter_raw_samples(path), start=1):
                    yield raw
                empty = 0 if n else empty + 1
                if empty > 10 * len(files):  # every shard replaced by an empty tar: fail, never spin
                    raise RuntimeError(f"the train shards in {self.dir} hold no samples; "
                                       f"run `avpea shards verify {self.dir}`")

        return wds.DataPipeline(resampled, expand, _shuffle(self.shuffle_buffer, shuffle_rng))

    def _replacement(self, v: int, k: int, slot: int) -> tuple[dict[str, Any], int]:
        failures = 0
        for attempt in range(_MAX_REPLACEMENT_DRAWS):
            rng = self._rng(v, 2, k, slot, attempt)
            shard = int(rng.integers(len(self.files)))
            pos = int(rng.integers(self.counts[shard]))
            for i, raw in enumerate(iter_raw_samples(self.files[shard])):
                if i == pos:
                    try:
                        return self._decode(raw), failures
                    except SampleError:
                        break
            failures += 1
        raise RuntimeError(f"no readable training sample in {_MAX_REPLACEMENT_DRAWS} random draws from "
                           f"{self.dir}: the shards are badly damaged; run `avpea shards verify {self.dir}`")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        s, workers = self._slot()
        first = self.start_batch + s  # global batch index of this slot's first batch
        if first >= self.epoch_batches:
            return
        v, k = first % workers, first // workers
        raw = iter(self.raw_pipeline(v))
        for _ in range(k * self.batch_size):  # exact skip: raw bytes only, nothing decoded
            next(raw)
        for _ in range(first, self.epoch_batches, workers):
            samples, skipped = [], 0
            for slot in range(self.batch_size):
                try:
                    samples.append(self._decode(next(raw)))
                except SampleError:
                    sample, failures = self._replacement(v, k, slot)
                    samples.append(sample)
                    skipped += 1 + failures
            yield _collate(samples, skipped, self.img_size)
            k += 1


# ---------------------------------------------------------------------------------------------
# Evaluation


class EvalStream(_Base):
    """This rank's contiguous share of the split, cut again per worker; each sample decoded once."""

    def __init__(self, shards_dir: str | Path, split: str, *, batch_size: int, img_size: int, rank: int,
                 world_size: int) -> None:
        super().__init__(shards_dir, split, img_size)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must lie in [0, world_size={world_size})")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        n = sum(self.counts)
        self.lo, self.hi = rank * n // world_size, (rank + 1) * n // world_size
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        s, workers = self._slot()
        span = self.hi - self.lo
        lo, hi = self.lo + s * span // workers, self.lo + (s + 1) * span // workers
        samples: list[dict[str, Any]] = []
        skipped, seen_keys = 0, set()
        pending: dict[str, Any] | None = None
        offset = 0
        for path, count in zip(self.files, self.counts):
            a, b = max(lo, offset), min(hi, offset + count)  # positions of this shard that are ours
            if a < b:
                got = 0
                for i, raw in enumerate(iter_raw_samples(path)):
                    if offset + i >= b:
                        break
                    if offset + i < a:
                        continue
                    got += 1
                    try:
                        if raw.key in seen_keys:
                            raise SampleError(f"duplicate key '{raw.key}'")
                        samples.append(self._decode(raw))
                        seen_keys.add(raw.key)
                    except SampleError:
                        skipped += 1
                    if len(samples) == self.batch_size:
                        if pending is not None:
                            yield pending
                        pending, samples, skipped = _collate(samples, skipped, self.img_size), [], 0
                skipped += (b - a) - got  # a shard shorter than its manifest entry
            offset += count
        if samples:
            if pending is not None:
                yield pending
            pending, skipped = _collate(samples, skipped, self.img_size), 0
        if pending is not None:
            pending["skipped"] += skipped  # late failures still reach the loop's counts
            yield pending
        elif skipped:
            yield _collate([], skipped, self.img_size)


# ---------------------------------------------------------------------------------------------
# Loaders


def _loader(dataset: IterableDataset, num_workers: int) -> DataLoader:
    if num_workers < 0:
        raise ValueError(f"num_workers={num_workers} must be >= 0")
    return DataLoader(dataset, batch_size=None, num_workers=num_workers,
                      multiprocessing_context=worker_context() if num_workers else None,
                      pin_memory=torch.cuda.is_available())


def make_train_loader(shards_dir: str | Path, *, batch_size: int, img_size: int, num_workers: int,
                      shuffle_buffer: int, seed: int, rank: int, world_size: int, epoch: int,
                      epoch_batches: int, start_batch: int = 0) -> DataLoader:
    """Exactly ``epoch_batches - start_batch`` batches (``len()`` says so), a pure function of the arguments."""
    return _loader(TrainStream(shards_dir, batch_size=batch_size, img_size=img_size, shuffle_buffer=shuffle_buffer,
                               seed=seed, rank=rank, world_size=world_size, epoch=epoch,
                               epoch_batches=epoch_batches, start_batch=start_batch), num_workers)


def make_eval_loader(shards_dir: str | Path, split: str, *, batch_size: int, img_size: int, num_workers: int,
                     rank: int, world_size: int) -> DataLoader:
    """Every sample of ``split`` exactly once across ranks; corrupt ones counted in ``skipped``."""
    return _loader(EvalStream(shards_dir, split, batch_size=batch_size, img_size=img_size, rank=rank,
                              world_size=world_size), num_workers)
