"""The training epoch plan: which samples each rank and each loader worker reads, as shard pieces.

An epoch is a walk through the training shards in a seeded random order (a new order every epoch; when
the plan needs more samples than the split holds, the walk continues with another order). The first
``world_size * epoch_batches * batch_size`` samples of the walk are used; the rest, at most
``world_size * batch_size - 1`` samples at the default ``epoch_batches``, are left over: the tail of
whichever shard comes last, so a different few each epoch. The used part is cut into consecutive ranges,
rank-major: rank r gets the same range whatever its worker count, and inside it worker w of W (who
delivers the rank's batches w, w + W, ...) gets its own consecutive range. A range is a list of
``Piece``s, parts of shards, which the worker reads as contiguous byte spans.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_ORDER = 0x5EED  # keeps the shard-order stream apart from the other seeded streams of the same epoch


@dataclass(frozen=True)
class Piece:
    """Samples ``[start, stop)`` (positions in the manifest's order) of shard number ``shard``."""

    shard: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def epoch_walk(counts: list[int], seed: int, epoch: int, total: int) -> list[Piece]:
    """The first ``total`` samples of the epoch's walk through the shards (``counts`` samples each)."""
    pieces: list[Piece] = []
    left, lap = total, 0
    while left > 0:
        order = np.random.default_rng([seed % 2**63, epoch, _ORDER, lap]).permutation(len(counts))
        for i in order:
            n = min(counts[i], left)
            if n:
                pieces.append(Piece(int(i), 0, n))
            left -= n
        lap += 1
    return pieces


def cut(pieces: list[Piece], lo: int, hi: int) -> list[Piece]:
    """Samples ``[lo, hi)`` of the walk ``pieces``, as pieces."""
    out, at = [], 0
    for p in pieces:
        a, b = max(lo, at), min(hi, at + len(p))
        if a < b:
            out.append(Piece(p.shard, p.start + a - at, p.start + b - at))
        at += len(p)
        if at >= hi:
            break
    return out


def worker_batches(worker: int, workers: int, epoch_batches: int) -> int:
    """How many of a rank's ``epoch_batches`` batches worker ``worker`` of ``workers`` delivers."""
    return len(range(worker, epoch_batches, workers))


def rank_plan(counts: list[int], *, seed: int, epoch: int, rank: int, world_size: int, batch_size: int,
              epoch_batches: int, workers: int) -> list[list[Piece]]:
    """Per worker of this rank, the pieces it reads this epoch (``workers`` >= 1)."""
    per_rank = epoch_batches * batch_size
    walk = epoch_walk(counts, seed, epoch, world_size * per_rank)
    plan, lo = [], rank * per_rank
    for w in range(workers):
        n = worker_batches(w, workers, epoch_batches) * batch_size
        plan.append(cut(walk, lo, lo + n))
        lo += n
    return plan
