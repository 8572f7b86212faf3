"""The training stream: one rank's micro-batches of the epoch's global batches, the same at any world size.

``epoch_plan`` fixes the epoch's order and each global batch's samples from (seed, epoch) alone; this rank
reads its contiguous slice of every global batch, cut into micro-batches, and worker w of the rank's
``workers`` delivers micro-batches w, w + workers, ... (the DataLoader's round-robin order). A worker reads
exactly its samples' byte ranges: the samples of one micro-batch are grouped by shard, runs of neighbouring
positions are read as one range (``tario.read_piece`` from the sample's byte offset), and nothing else is
taken from disk. Offsets come from the shards' reader index (``SplitStream.span_of``); for folders built
before the index existed they come from one tar-header walk per shard, made by the rank's process (cached
there across epochs) and handed to its workers.

* every rank yields exactly ``(epoch_batches - start_batch) * accum`` micro-batches; ``start_batch=k``
  starts at global batch k with nothing read for the batches before it (a resume, at any world size);
* a corrupt sample, and one a damaged shard never yielded, is replaced by a draw from an RNG keyed by
  (seed, epoch, global batch, slot in the global batch, attempt): the repair is the same at every world size
  and never shifts another sample; it is counted in ``skipped``, and a damaged shard adds one line to the
  batch's ``problems``.

Whole shards are never read end to end here, so their sha256 is not checked while training (``avpea shards
verify`` does); a damaged tar is still found, named and counted.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from .. import storage
from .epoch_plan import _rng, epoch_order, rank_slice, worker_micro_batches
from .index import INDEX
from .stream import SampleError, SplitStream
from .tario import PieceEnd, RawSample, read_piece, sample_offsets

if TYPE_CHECKING:
    from .codec import SampleCodec

_MAX_REPLACEMENT_DRAWS = 64
_REPLACE = 2  # keeps the replacement draws apart from the order's stream
_ADDRESS = re.compile(r" @ <[^<>]* at 0x[0-9a-f]+>")
_OFFSETS: dict[tuple, list[int]] = {}  # per process: tar-header walks of shards without (valid) index offsets
_DISTRUSTED: set[str] = set()  # per process: shards whose index offsets failed a read
REMOTE_READS = 8
"""Byte ranges of one micro-batch fetched at once from a URL root: each is a round trip to the store, so a
worker that fetched them one after another would wait on every one."""
REMOTE_AHEAD = 4
"""Micro-batches whose ranges a worker fetches from a URL root while it decodes the current one: decoding and
the store's round trips then overlap instead of adding up. Memory: this many micro-batches of raw bytes."""
_POOLS: dict[tuple[int, str], ThreadPoolExecutor] = {}  # per process (a forked loader worker makes its own)


def _pool(kind: str = "ranges", threads: int = REMOTE_READS) -> ThreadPoolExecutor:
    # Two pools: a prefetch job waits on range reads, so they must not share (and exhaust) one pool.
    key = (os.getpid(), kind)
    if key not in _POOLS:
        _POOLS[key] = ThreadPoolExecutor(threads, thread_name_prefix=f"avpea-{kind}")
    return _POOLS[key]


def _header_walk(path: str, count: int) -> list[int]:
    try:  # a shard rewritten in place (a rebuild during a long-lived process) is walked again
        st = os.stat(path)
        key: tuple = (path, st.st_size, st.st_mtime_ns)
    except OSError:  # not a local file (a URL): its name is its identity
        key = (path,)
    if key not in _OFFSETS:
        _OFFSETS[key] = sample_offsets(path, count)
    return _OFFSETS[key]


class TrainStream(SplitStream):
    """Yields exactly ``(epoch_batches - start_batch) * accum`` micro-batches of ``batch_size`` across its
    DataLoader's workers, whatever their number. ``global_batch`` (default ``batch_size * world_size``) must be
    a multiple of ``world_size * batch_size``; ``epoch_batches`` and ``start_batch`` count global batches."""

    def __init__(self, shards_dir: str | Path, *, batch_size: int, img_size: int, shuffle_buffer: int, seed: int,
                 rank: int, world_size: int, epoch: int, epoch_batches: int, start_batch: int = 0,
                 codec: SampleCodec, global_batch: int | None = None,
                 sampling: str = "sequential") -> None:
        super().__init__(shards_dir, "train", img_size, codec)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must lie in [0, world_size={world_size})")
        if not 0 <= start_batch <= epoch_batches:
            raise ValueError(f"start_batch={start_batch} must lie in [0, epoch_batches={epoch_batches}]")
        if batch_size < 1 or shuffle_buffer < 1:
            raise ValueError(f"batch_size={batch_size} and shuffle_buffer={shuffle_buffer} must be >= 1")
        g = global_batch if global_batch is not None else batch_size * world_size
        if g < 1 or g % (world_size * batch_size):
            raise ValueError(f"global_batch={g} must be a multiple of world_size={world_size} x "
                             f"batch_size={batch_size} (see epoch_plan.split_global_batch)")
        self.batch_size, self.global_batch = batch_size, g
        self.accum = g // (world_size * batch_size)
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, epoch
        self.epoch_batches, self.start_batch = epoch_batches, start_batch
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.total = int(sum(self.counts))
        order = epoch_order(self.counts, seed=seed, epoch=epoch, samples=epoch_batches * g,
                            shuffle_buffer=shuffle_buffer, sampling=sampling, index=self.index)
        # Only this rank's slices travel to the workers: (epoch_batches, G / W) sample numbers.
        self.mine = np.stack([rank_slice(order, b, g, rank, world_size) for b in range(epoch_batches)]) \
            if epoch_batches else np.zeros((0, g // world_size), np.int64)
        try:
            self.index_mtime: int | None = os.stat(os.path.join(self.dir, INDEX)).st_mtime_ns
        except OSError:  # no index (an older folder: offsets from headers), or not a local folder (a URL)
            self.index_mtime = None
        self.offsets = self._walk_headers()

    def _walk_headers(self) -> dict[int, list[int]]:
        """Without a reader index: the sample offsets of the shards this rank reads, walked once in the rank's
        process (cached there across epochs) and handed to its workers, instead of once per worker."""
        numbers = np.unique(self.mine[self.start_batch:])
        shards = np.unique(np.searchsorted(self.starts, numbers, side="right") - 1)  # locate(), for all at once
        return {s: _header_walk(self.files[s], self.counts[s]) for s in shards.tolist() if not self._indexed(s)}

    def _indexed(self, shard: int) -> bool:
        """Whether the index's offsets hold for this shard: it has them, the file is the size the index says and
        not newer than the index, and no read at them failed (a shard rewritten or cut after the build would
        be read at wrong offsets: it is walked instead)."""
        if self.span_of(shard, 0) is None or self.files[shard] in _DISTRUSTED:
            return False
        try:
            st = os.stat(self.files[shard])
        except OSError:  # not a local file (a URL), or gone: the read itself reports it
            return True
        # index.json is written after every shard of a build: a shard newer than it was changed since.
        return st.st_size == int(self.index.bytes[shard]) and (self.index_mtime is None or
                                                               st.st_mtime_ns <= self.index_mtime)

    def __len__(self) -> int:
        return (self.epoch_batches - self.start_batch) * self.accum

    # ------------------------------------------------------------------------------------------
    # Which samples

    def micro_samples(self, j: int) -> tuple[int, int, np.ndarray]:
        """(global batch, first slot in it, sample numbers) of this rank's micro-batch ``j`` of the epoch."""
        b, a = divmod(j, self.accum)
        lo = a * self.batch_size
        return b, self.rank * (self.global_batch // self.world_size) + lo, self.mine[b, lo:lo + self.batch_size]

    def worker_micro_batches(self, worker: int, workers: int) -> range:
        return worker_micro_batches(worker, workers, self.start_batch * self.accum, self.epoch_batches * self.accum)

    # ------------------------------------------------------------------------------------------
    # Reading exactly those samples

    def locate(self, number: int) -> tuple[int, int]:
        """(shard, position in it) of sample ``number`` of the split."""
        shard = int(np.searchsorted(self.starts, number, side="right")) - 1
        return shard, int(number - self.starts[shard])

    def _offset(self, shard: int, pos: int) -> int | None:
        """Byte offset of a sample's first tar header; None when the shard's tar ends before it."""
        if self._indexed(shard):
            return int(self.span_of(shard, pos)[0])
        offsets = self.offsets.get(shard) or _header_walk(self.files[shard], self.counts[shard])
        return offsets[pos] if pos < len(offsets) else None

    def read_samples(self, numbers: np.ndarray) -> tuple[list[RawSample | None], list[str]]:
        """The raw samples ``numbers`` (None for one a damaged shard never yielded) and the damaged shards'
        lines; neighbouring positions of one shard are read as one range, each range once."""
        where = [self.locate(int(n)) for n in numbers]
        got: dict[tuple[int, int], RawSample] = {}
        problems: list[str] = []
        runs = []
        for shard in sorted({s for s, _ in where}):
            positions = sorted({p for s, p in where if s == shard})
            lo = positions[0]
            for prev, cur in zip(positions, positions[1:] + [None]):
                if cur != prev + 1:
                    runs.append((shard, lo, prev + 1))
                    lo = cur
        read = (lambda r: self._read_trusted(*r))
        # Results are gathered by position, so the order the ranges arrive in changes nothing downstream.
        done = _pool().map(read, runs) if len(runs) > 1 and storage.is_url(self.files[runs[0][0]]) else map(read, runs)
        for (shard, a, _), (raws, problem) in zip(runs, done):
            got.update({(shard, a + i): raw for i, raw in enumerate(raws)})
            problems += [problem] if problem else []
        return [got.get(w) for w in where], problems

    def _read_trusted(self, shard: int, a: int, b: int) -> tuple[list[RawSample], str | None]:
        raws, problem = self._read_run(shard, a, b)
        if problem and self._indexed(shard):
            # The index's offsets no longer fit this shard (rewritten since the build): walk its headers.
            _DISTRUSTED.add(self.files[shard])
            raws, problem = self._read_run(shard, a, b)
        return raws, problem

    def _read_run(self, shard: int, a: int, b: int) -> tuple[list[RawSample], str | None]:
        """Samples ``[a, b)`` of a shard read as one range, and the line of a damaged shard (None if whole)."""
        raws, problem = [], None
        for item in read_piece(self.files[shard], a, b, self.counts[shard], None, self._offset(shard, a)):
            if isinstance(item, PieceEnd):
                # webdataset's tar errors name the file object by its address: keep lines comparable
                problem = _ADDRESS.sub("", item.problem) if item.problem else None
            else:
                raws.append(item)
        return raws, problem

    def replacement(self, batch: int, slot: int) -> tuple[dict[str, Any], int]:
        """A random readable training sample for ``slot`` of global batch ``batch``, and the failed draws."""
        for attempt in range(_MAX_REPLACEMENT_DRAWS):
            rng = _rng(self.seed, self.epoch, _REPLACE, batch, slot, attempt)
            (raw,), _ = self.read_samples(np.array([rng.integers(self.total)]))
            if raw is not None:
                try:
                    return self.decode(raw), attempt
                except SampleError:
                    pass
        raise RuntimeError(f"no readable training sample in {_MAX_REPLACEMENT_DRAWS} random draws from "
                           f"{self.dir}: the shards are badly damaged; run `avpea shards verify {self.dir}`")

    def micro_batch(self, j: int, read: tuple[list[RawSample | None], list[str]] | None = None) -> dict[str, Any]:
        """This rank's micro-batch ``j`` of the epoch, decoded and collated; replacements by (batch, slot).
        ``read``: its samples as ``read_samples`` returned them, when they were fetched ahead."""
        batch, first, numbers = self.micro_samples(j)
        raws, problems = read if read is not None else self.read_samples(numbers)
        samples, skipped = [], 0
        for i, raw in enumerate(raws):
            if raw is not None:
                try:
                    samples.append(self.decode(raw))
                    continue
                except SampleError:
                    pass
            sample, failures = self.replacement(batch, first + i)
            samples.append(sample)
            skipped += 1 + failures
        return self.collate(samples, skipped, problems)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        i, workers = self.slot()
        mine = list(self.worker_micro_batches(i, workers))
        if not storage.is_url(str(self.dir)):  # a local read costs less than handing it to a thread
            for j in mine:
                yield self.micro_batch(j)
            return
        # From a store: the next REMOTE_AHEAD micro-batches' ranges are in flight while this one decodes. The
        # batches are the same; a fetch's error is raised where the batch is taken, as without the read-ahead.
        ahead = _pool("ahead", REMOTE_AHEAD)
        pending = {j: ahead.submit(self.read_samples, self.micro_samples(j)[2]) for j in mine[:REMOTE_AHEAD]}
        for k, j in enumerate(mine):
            if k + REMOTE_AHEAD < len(mine):
                nxt = mine[k + REMOTE_AHEAD]
                pending[nxt] = ahead.submit(self.read_samples, self.micro_samples(nxt)[2])
            yield self.micro_batch(j, pending.pop(j).result())
