"""Stream shards to ranks: decoding, the base of both streams, and the exactly-once eval stream.

Every sample's json goes through the task's codec (``data.codec.SampleCodec``): the stream knows no task.
Training batches come from ``train_stream.TrainStream`` (every training sample once per epoch across ranks,
exact resume; see ``epoch_plan``); ``loaders`` wraps both streams in DataLoaders. Evaluation: the split's
samples, in manifest order, are cut into contiguous ranges per rank and per worker (positions within shards, from the
index's counts, ``index.load_index``), so each is decoded exactly once across all ranks; corrupt or missing ones are counted in
``skipped`` instead.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from . import exit_with
from .features import load_npy, normalise_fbank
from .manifest import SEGMENTS as NUM_SEGMENTS
from .index import load_index
from .manifest import FBANK_FRAMES, FRAME_MEMBERS, MEL_BINS, MEMBERS
from .tario import RawSample, iter_raw_samples

if TYPE_CHECKING:
    from .codec import SampleCodec

__all__ = ["decode_jpeg", "decode_media", "decode_sample", "collate", "SampleError", "SplitStream", "EvalStream"]


class SampleError(Exception):
    """A sample that cannot be decoded; the reason is the message."""


# ---------------------------------------------------------------------------------------------
# Decoding one raw sample


def decode_jpeg(data: bytes, frame_size: int, img_size: int) -> np.ndarray:
    """JPEG bytes -> uint8 (img_size, img_size, 3). When shrinking, libjpeg decodes at a reduced DCT scale
    first (``draft``), which is several times faster than a full decode and resize."""
    im = Image.open(io.BytesIO(data))
    if im.format != "JPEG" or im.size != (frame_size, frame_size):
        raise ValueError(f"frame is {im.format} {im.size[0]}x{im.size[1]}, expected JPEG {frame_size}x{frame_size}")
    if img_size != frame_size:
        im.draft("RGB", (img_size, img_size))
        im = im.convert("RGB").resize((img_size, img_size), Image.BILINEAR)
    return np.asarray(im.convert("RGB"))


def decode_media(raw: RawSample, *, frame_size: int,
                 img_size: int) -> tuple[dict[str, Any], list[np.ndarray], np.ndarray]:
    """What every schema's sample holds -> (its json, 10 frames uint8 (S, S, 3), audio float32 (10, 128, 102)
    normalised), validated; raises ``SampleError`` for anything malformed."""
    if raw.error:
        raise SampleError(raw.error)
    m = raw.members
    missing = [k for k in MEMBERS if k not in m]
    if missing:
        raise SampleError(f"sample '{raw.key}' lacks members {missing}")
    try:
        meta = json.loads(m["json"])
        if not isinstance(meta, dict):
            raise SampleError(f"sample '{raw.key}': json is a {type(meta).__name__}, not an object")
        if meta.get("key", meta["id"]) != raw.key:  # builds before `key` existed used the id as the key
            raise SampleError(f"sample '{raw.key}': json key {meta.get('key', meta['id'])!r} differs from its tar key")
        fbank = load_npy(m["fbank.npy"])
        if fbank.shape != (NUM_SEGMENTS, MEL_BINS, FBANK_FRAMES) or fbank.dtype != np.float16:
            raise SampleError(f"sample '{raw.key}': fbank is {fbank.dtype}{fbank.shape}, "
                              f"expected float16{(NUM_SEGMENTS, MEL_BINS, FBANK_FRAMES)}")
        audio = normalise_fbank(fbank)
        if not np.isfinite(audio).all():
            raise SampleError(f"sample '{raw.key}': fbank holds non-finite values")
        frames = [decode_jpeg(m[name], frame_size, img_size) for name in FRAME_MEMBERS]  # HWC, stacked by collate
    except SampleError:
        raise
    except Exception as e:  # bad JSON, bad npy header, bad JPEG bytes...
        raise SampleError(f"sample '{raw.key}': {type(e).__name__}: {e}") from None
    return meta, frames, audio


def decode_sample(raw: RawSample, *, codec: SampleCodec, frame_size: int, img_size: int) -> dict[str, Any]:
    """Raw member bytes -> ``{frames: [10 x uint8 (S, S, 3)], audio: float32 (10, 128, 102) normalised,
    targets: codec.parse(json), key}``; raises ``SampleError`` for anything malformed, a codec's ValueError
    included. ``collate`` turns a list of these into a batch."""
    meta, frames, audio = decode_media(raw, frame_size=frame_size, img_size=img_size)
    try:
        targets = codec.parse(meta, raw.key)
    except (ValueError, KeyError, TypeError) as e:  # a record the task cannot use: skipped with its reason
        raise SampleError(f"sample '{raw.key}': {e}") from None
    return {"frames": frames, "audio": audio, "targets": targets, "key": raw.key}


def collate(samples: list[dict[str, Any]], skipped: int, img_size: int, *, codec: SampleCodec,
            problems: list[str] | None = None) -> dict[str, Any]:
    """Stack decoded samples into batch tensors with one copy per pixel, plus ``codec.collate``'s fields of
    their targets (the codec that parsed them). In a worker the tensors are allocated in shared memory, so the
    DataLoader's queue passes them without copying them again."""
    frames = torch.empty(len(samples), NUM_SEGMENTS, 3, img_size, img_size, dtype=torch.uint8)
    audio = torch.empty(len(samples), NUM_SEGMENTS, MEL_BINS, FBANK_FRAMES)
    if get_worker_info() is not None:
        frames.share_memory_(), audio.share_memory_()
    frames_np, audio_np = frames.numpy(), audio.numpy()  # views: numpy copies from read-only PIL buffers
    for b, s in enumerate(samples):
        for i, hwc in enumerate(s["frames"]):
            frames_np[b, i] = hwc.transpose(2, 0, 1)
        audio_np[b] = s["audio"]
    fields = codec.collate([s["targets"] for s in samples])
    return {"frames": frames, "audio": audio, **fields, "key": [s["key"] for s in samples], "skipped": skipped,
            "problems": list(problems or [])}


class SplitStream(IterableDataset):
    """One split of a shard folder, validated against its manifest; the base of both streams."""

    def __init__(self, shards_dir: str | Path, split: str, img_size: int, codec: SampleCodec) -> None:
        if not (callable(getattr(codec, "parse", None)) and callable(getattr(codec, "collate", None))):
            raise TypeError(f"codec={codec!r} is not a SampleCodec (parse, collate): pass the run's task's "
                            f"codec, codec=task.codec(split, epoch)")
        self.dir, self.split = Path(shards_dir), split
        # Loaded once per process (index.json, or manifest.json for an older folder). Shards are not
        # checked here: one missing when read counts like any unreadable shard, not a per-epoch stat of each.
        self.index = load_index(shards_dir, split)
        self.files = [self.index.url(i) for i in range(len(self.index.files))]
        self.counts = [int(c) for c in self.index.counts]
        self.sha256 = list(self.index.sha256)
        self.codec = codec
        self.frame_size = int(self.index.header["preprocessing"]["frame_size"])
        self.img_size = img_size
        self.owner_pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        # A DataLoader worker loads the index itself (once per process) rather than receive a pickled copy.
        return {k: v for k, v in self.__dict__.items() if k != "index"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.index = load_index(self.dir, self.split)

    def span_of(self, shard: int, pos: int) -> tuple[int, int] | None:
        """Byte range ``[start, end)`` of sample ``pos`` of shard ``shard`` (from the index); None for a folder
        built before the index, where the caller walks tar headers (``tario.sample_offsets``)."""
        return self.index.span(shard, pos)

    def decode(self, raw: RawSample) -> dict[str, Any]:
        return decode_sample(raw, frame_size=self.frame_size, img_size=self.img_size, codec=self.codec)

    def collate(self, samples: list[dict[str, Any]], skipped: int, problems: list[str] | None = None) -> dict[str, Any]:
        return collate(samples, skipped, self.img_size, codec=self.codec, problems=problems)

    def slot(self) -> tuple[int, int]:
        info = get_worker_info()
        if info is None:
            return 0, 1
        torch.set_num_threads(1)  # W workers per rank already use the cores
        exit_with(self.owner_pid)
        return info.id, info.num_workers


# ---------------------------------------------------------------------------------------------
# Evaluation


class EvalStream(SplitStream):
    """This rank's contiguous share of the split, cut again per worker; each sample decoded once."""

    def __init__(self, shards_dir: str | Path, split: str, *, batch_size: int, img_size: int, rank: int,
                 world_size: int, codec: SampleCodec) -> None:
        super().__init__(shards_dir, split, img_size, codec)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must lie in [0, world_size={world_size})")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        n = sum(self.counts)
        self.lo, self.hi = rank * n // world_size, (rank + 1) * n // world_size
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        s, workers = self.slot()
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
                        samples.append(self.decode(raw))
                        seen_keys.add(raw.key)
                    except SampleError:
                        skipped += 1
                    if len(samples) == self.batch_size:
                        if pending is not None:
                            yield pending
                        pending, samples, skipped = self.collate(samples, skipped), [], 0
                skipped += (b - a) - got  # a shard shorter than its manifest entry
            offset += count
        if samples:
            if pending is not None:
                yield pending
            pending, skipped = self.collate(samples, skipped), 0
        if pending is not None:
            pending["skipped"] += skipped  # late failures still reach the loop's counts
            yield pending
        elif skipped:
            yield self.collate([], skipped)
