"""The training stream: every training sample once per epoch across ranks, in exact, resumable batches.

Per rank, worker (virtual stream) w of W delivers the rank's batches w, w + W, ... (``epoch_plan``). Its
webdataset pipeline is: ``PlannedSamples`` (its planned shard pieces, up to ``OPEN_PIECES`` read at once
and interleaved sample by sample; whole shards hashed as they are read) -> ``wds.shuffle`` (seeded) ->
``ExactBatches`` (raw items ``[kB, (k+1)B)`` decoded and collated as its k-th batch). So

* every rank yields exactly ``epoch_batches - start_batch`` batches; with ``epoch_batches`` at its default
  every sample is used once per epoch except at most ``world_size * batch_size - 1`` left over;
* ``start_batch=k`` skips by reading raw bytes only (nothing decoded) and gives exactly batches k.. of the
  uninterrupted run; the batches are a pure function of the arguments, the worker count included (the
  rank's samples do not depend on it; their split into batches does);
* a corrupt sample, and a planned one a damaged shard never yielded, is replaced by a draw from an RNG keyed
  by (stream, batch, slot, attempt), so repairs never shift later batches; it is counted in ``skipped``,
  and a damaged shard adds one line to the batch's ``problems``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import webdataset as wds

from .epoch_plan import Piece, rank_plan, worker_batches
from .stream import SampleError, SplitStream
from .tario import PieceEnd, RawSample, read_piece, sample_offsets

if TYPE_CHECKING:
    from .codec import SampleCodec

OPEN_PIECES = 8  # shard pieces a worker reads at once: more mixes classes better, each holds a file open
_MAX_REPLACEMENT_DRAWS = 64
_SHUFFLE, _REPLACE = 1, 2  # keep the seeded streams of one worker apart


def _interleave(sources: list[Callable[[], Iterator[Any]]], width: int) -> Iterator[Any]:
    """Round-robin over up to ``width`` open sources; a finished one is replaced by the next."""
    waiting = iter(sources)
    live: list[Iterator[Any]] = []
    i = 0
    while True:
        while len(live) < width and (src := next(waiting, None)) is not None:
            live.append(src())
        if not live:
            return
        i %= len(live)
        item = next(live[i], None)
        if item is None:
            del live[i]
            continue
        yield item
        i += 1


class PlannedSamples(wds.PipelineStage):
    """The source stage: a worker's planned pieces, as raw samples and ``PieceEnd`` reports."""

    def __init__(self, stream: "TrainStream", pieces: list[tuple[Piece, int | None]]) -> None:
        self.stream, self.pieces = stream, pieces

    def run(self) -> Iterator[RawSample | PieceEnd]:
        s = self.stream

        def source(p: Piece, offset: int | None) -> Callable[[], Iterator[RawSample | PieceEnd]]:
            return lambda: read_piece(s.files[p.shard], p.start, p.stop, s.counts[p.shard], s.sha256[p.shard], offset)

        return _interleave([source(p, off) for p, off in self.pieces], OPEN_PIECES)


class ExactBatches(wds.PipelineStage):
    """Raw items -> this worker's batches ``first..`` of ``count``, each ``batch_size`` decoded samples."""

    def __init__(self, stream: "TrainStream", v: int, first: int, count: int) -> None:
        self.stream, self.v, self.first, self.count = stream, v, first, count

    def run(self, items: Iterator[RawSample | PieceEnd]) -> Iterator[dict[str, Any]]:
        s, size = self.stream, self.stream.batch_size
        items = iter(items)
        taken = 0
        while taken < self.first * size and (item := next(items, None)) is not None:
            taken += not isinstance(item, PieceEnd)  # reports there went with the batches skipped
        for k in range(self.first, self.count):
            raws: list[RawSample] = []
            skipped, problems = 0, []
            while (len(raws) < size or k == self.count - 1) and (item := next(items, None)) is not None:
                if isinstance(item, PieceEnd):  # the last batch waits for the last report
                    skipped += item.missing
                    problems += [item.problem] if item.problem else []
                elif len(raws) < size:
                    raws.append(item)
            samples = []
            for slot in range(size):
                if slot < len(raws):
                    try:
                        samples.append(s.decode(raws[slot]))
                        continue
                    except SampleError:
                        skipped += 1
                sample, failures = s.replacement(self.v, k, slot)  # missing ones are in their PieceEnd
                samples.append(sample)
                skipped += failures
            yield s.collate(samples, skipped, problems)


class TrainStream(SplitStream):
    """Yields exactly ``epoch_batches - start_batch`` batches across ``workers`` DataLoader workers."""

    def __init__(self, shards_dir: str | Path, *, batch_size: int, img_size: int, shuffle_buffer: int, seed: int,
                 rank: int, world_size: int, epoch: int, epoch_batches: int, start_batch: int = 0,
                 workers: int = 1, codec: SampleCodec) -> None:
        super().__init__(shards_dir, "train", img_size, codec)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must lie in [0, world_size={world_size})")
        if not 0 <= start_batch <= epoch_batches:
            raise ValueError(f"start_batch={start_batch} must lie in [0, epoch_batches={epoch_batches}]")
        if batch_size < 1 or shuffle_buffer < 1 or workers < 1:
            raise ValueError(f"batch_size={batch_size}, shuffle_buffer={shuffle_buffer} and workers={workers} "
                             f"must be >= 1")
        self.batch_size, self.shuffle_buffer, self.workers = batch_size, shuffle_buffer, workers
        self.seed, self.rank, self.epoch = seed, rank, epoch
        self.epoch_batches, self.start_batch = epoch_batches, start_batch
        plan = rank_plan(self.counts, seed=seed, epoch=epoch, rank=rank, world_size=world_size,
                         batch_size=batch_size, epoch_batches=epoch_batches, workers=workers)
        self.plan = self._locate(plan)

    def _locate(self, plan: list[list[Piece]]) -> list[list[tuple[Piece, int | None]]]:
        """Byte offsets of the pieces that start mid-shard, found once for the rank from tar headers alone
        (its workers then read only their own samples' bytes)."""
        need: dict[int, int] = {}
        for p in (p for pieces in plan for p in pieces if p.start):
            need[p.shard] = max(need.get(p.shard, 0), p.start)
        offsets = {i: sample_offsets(self.files[i], upto) for i, upto in need.items()}

        def where(p: Piece) -> int | None:
            if not p.start:
                return 0
            return offsets[p.shard][p.start] if p.start < len(offsets[p.shard]) else None

        return [[(p, where(p)) for p in pieces] for pieces in plan]

    def __len__(self) -> int:
        return self.epoch_batches - self.start_batch

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed % 2**63, self.epoch, self.rank, *key])  # seeds may be negative

    def raw_pipeline(self, v: int) -> wds.DataPipeline:
        """Virtual stream v's raw items (samples and ``PieceEnd`` reports), shuffled."""
        planned = sum(len(p) for p, _ in self.plan[v])
        shuffle_rng = random.Random(int(self._rng(v, _SHUFFLE).integers(2**63)))
        buffer = max(1, min(self.shuffle_buffer, planned))
        return wds.DataPipeline(PlannedSamples(self, self.plan[v]),
                                wds.shuffle(buffer, initial=buffer, rng=shuffle_rng))

    def pipeline(self, v: int, first: int) -> wds.DataPipeline:
        """Virtual stream v's batches from its ``first``-th on."""
        count = worker_batches(v, self.workers, self.epoch_batches)
        return wds.DataPipeline(self.raw_pipeline(v), ExactBatches(self, v, first, count))

    def replacement(self, v: int, k: int, slot: int) -> tuple[dict[str, Any], int]:
        """A random readable training sample for slot ``slot`` of stream v's batch k, and the failed draws."""
        for attempt in range(_MAX_REPLACEMENT_DRAWS):
            rng = self._rng(v, _REPLACE, k, slot, attempt)
            shard = int(rng.integers(len(self.files)))
            pos = int(rng.integers(self.counts[shard]))
            offsets = sample_offsets(self.files[shard], pos)
            if pos < len(offsets):
                piece = read_piece(self.files[shard], pos, pos + 1, self.counts[shard], None, offsets[pos])
                raw = next(piece)
                piece.close()
                if isinstance(raw, RawSample):
                    try:
                        return self.decode(raw), attempt
                    except SampleError:
                        pass
        raise RuntimeError(f"no readable training sample in {_MAX_REPLACEMENT_DRAWS} random draws from "
                           f"{self.dir}: the shards are badly damaged; run `avpea shards verify {self.dir}`")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        i, workers = self.slot()
        if workers != self.workers:
            raise RuntimeError(f"this TrainStream was planned for {self.workers} workers, not {workers}")
        j = self.start_batch + i  # the rank's batch this worker delivers first; see the module docstring
        if j < self.epoch_batches:
            yield from self.pipeline(j % workers, j // workers)
