"""The training epoch's plan: which samples each global batch holds, and which of them a rank and a worker read.

The run's unit is the *global batch* of G clips (``data.global_batch``), one optimizer step. The epoch's
order is an int64 array of sample numbers (positions in the split's index order) that depends on (seed,
epoch) only: 'sequential' sampling permutes the shards, cuts the permuted list into windows of about
``SHARDS_PER_WINDOW`` shards (at least ``shuffle_buffer`` samples each) and permutes the samples within
each window, so a batch reads from a few shards but mixes them like a shuffle buffer over them would;
'balanced' sampling takes bk's ``balanced.balanced_order`` (weighted draws with replacement). Global batch
g is ``order[g*G:(g+1)*G]``; rank r of W takes its contiguous slice of G/W, cut into micro-batches of m
(``split_global_batch``); worker w of a rank's ``workers`` delivers the rank's micro-batches w, w + workers,
... of the epoch. So the set of samples of every global batch, and the slot each sample has in it, is the
same at every world size and worker count; only who reads it changes. An epoch of E global batches uses
the first E*G samples of the order: with the default E = N // G every sample once, at most G - 1 left over
(a different few each epoch); a longer epoch continues with the next lap's order.
"""

from __future__ import annotations

import numpy as np

from .balanced import SAMPLINGS, balanced_order
from .index import SplitIndex

_ORDER = 0x5EED  # keeps the order's stream apart from the other seeded streams of the same epoch
SHARDS_PER_WINDOW = 8  # shards mixed by one window: more mixes better, fewer keeps a batch's reads local


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed % 2**63, *key])  # seeds may be negative


def lap_order(counts: list[int], seed: int, epoch: int, lap: int, shuffle_buffer: int) -> np.ndarray:
    """One pass over every sample (``counts`` per shard), in the (seed, epoch, lap) order: int64 sample numbers."""
    rng = _rng(seed, epoch, _ORDER, lap)
    counts_arr = np.asarray(counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts_arr)[:-1]]).astype(np.int64)
    shards = rng.permutation(len(counts_arr))
    samples = int(counts_arr.sum())
    windows = max(1, min(len(shards) // SHARDS_PER_WINDOW, samples // max(1, shuffle_buffer)))
    parts = []
    for group in np.array_split(shards, windows):
        seq = np.concatenate([np.arange(starts[s], starts[s] + counts_arr[s], dtype=np.int64) for s in group]
                             or [np.zeros(0, np.int64)])
        parts.append(seq[rng.permutation(len(seq))])
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def epoch_order(counts: list[int], *, seed: int, epoch: int, samples: int, shuffle_buffer: int,
                sampling: str = "sequential", index: SplitIndex | None = None) -> np.ndarray:
    """The epoch's first ``samples`` sample numbers (int64), a function of (seed, epoch) and the split only."""
    if sampling == "balanced":
        if index is None:
            raise ValueError("data.sampling=balanced needs the split's reader index (index.load_index)")
        return np.asarray(balanced_order(index, seed, epoch, samples), dtype=np.int64)
    if sampling != "sequential":
        raise ValueError(f"data.sampling={sampling!r} is not one of {', '.join(SAMPLINGS)}")
    if sum(counts) <= 0:
        raise ValueError("the train split holds no sample")
    laps, have, lap = [], 0, 0
    while have < samples:
        laps.append(lap_order(counts, seed, epoch, lap, shuffle_buffer))
        have += len(laps[-1])
        lap += 1
    return np.concatenate(laps)[:samples] if laps else np.zeros(0, np.int64)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def split_global_batch(global_batch: int, world_size: int, cap: int) -> tuple[int, int]:
    """(micro-batch, accumulation steps) of one rank: the largest micro-batch <= ``cap`` (data.batch_size) that
    divides the rank's share ``global_batch / world_size``, and how many of them make the share."""
    if global_batch < 1 or world_size < 1 or cap < 1:
        raise ValueError(f"global_batch={global_batch}, world_size={world_size} and data.batch_size={cap} "
                         f"must be >= 1")
    if global_batch % world_size:
        can = [d for d in divisors(global_batch) if d <= 4096]
        raise ValueError(f"data.global_batch={global_batch} cannot be split over {world_size} ranks; world sizes "
                         f"that divide it: {', '.join(map(str, can))} (or set another data.global_batch)")
    share = global_batch // world_size
    micro = max(d for d in divisors(share) if d <= cap)
    return micro, share // micro


def resolve_global_batch(global_batch: int, world_size: int, batch_size: int, grad_accum: int) -> int:
    """``data.global_batch``, or for configs without one (0) world x data.batch_size x optim.grad_accum."""
    return global_batch if global_batch > 0 else world_size * batch_size * grad_accum


def epoch_global_batches(samples: int, global_batch: int, epoch_batches: int = 0) -> int:
    """Global batches per epoch: ``epoch_batches`` when set, else one pass (``samples // global_batch``, >= 1)."""
    return epoch_batches if epoch_batches > 0 else max(1, samples // global_batch)


def rank_slice(order: np.ndarray, g: int, global_batch: int, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s samples of global batch ``g``: its contiguous share of ``order[g*G:(g+1)*G]``."""
    share = global_batch // world_size
    lo = g * global_batch + rank * share
    return order[lo:lo + share]


def worker_micro_batches(worker: int, workers: int, first: int, last: int) -> range:
    """A rank's micro-batches (numbered within the epoch) worker ``worker`` of ``workers`` delivers, when the
    rank's loader starts at micro-batch ``first`` and ends before ``last`` (the DataLoader takes one from each
    worker in turn, starting with worker 0)."""
    return range(first + worker, last, workers)
