"""Class-balanced sampling of a training split (``data.sampling: balanced``), as AudioSet training recipes do.

AudioSet's unbalanced train set is dominated by a few classes (speech and music are on about half the
clips; some classes have ~100 of 2 million). The recipes (PANNs, AST, CAV-MAE) draw each sample with a weight
from its labels' frequencies: ``w_i = sum over the labels c of sample i of 1 / n_c``, ``n_c`` the number of
train samples labelled c, with replacement, a fixed number of samples per "epoch". Here the draws are a pure
function of ``(seed, epoch)`` and the index: every rank computes the same order without talking to the
others, and a resumed run recomputes exactly the order it was reading.

The labels come from the readers' index (``index.SplitIndex.labels``, CSR), written by builds of releases
that give labels (VGGSound, AudioSet). A sample without labels gets weight 0 (never drawn).
"""

from __future__ import annotations

import numpy as np

from .index import SplitIndex

SAMPLINGS = ("sequential", "balanced")
"""``data.sampling``: 'sequential' = every sample once per epoch in a seeded order (the stream's default);
'balanced' = ``balanced_order``."""
_STREAM = 0xBA1A  # keeps these draws apart from other seeded streams of the same (seed, epoch)


def label_weights(index: SplitIndex) -> np.ndarray:
    """Per sample: the sum over its labels of 1 / (train samples with that label); float64, sums to the number
    of classes present."""
    if index.labels is None:
        raise ValueError(f"data.sampling=balanced needs each sample's labels, and the index of split "
                         f"'{index.split}' in {index.root} has none (its release gives no labels, or it was built "
                         f"before the index existed): rebuild the shards with this version, or use "
                         f"data.sampling=sequential")
    ptr, ids = index.labels
    counts = np.bincount(ids, minlength=int(ids.max()) + 1 if len(ids) else 0)
    inverse = np.zeros(len(counts), dtype=np.float64)
    inverse[counts > 0] = 1.0 / counts[counts > 0]
    per_label = inverse[ids]
    # Sum each sample's slice of per_label: reduceat on the starts of the non-empty rows.
    weights = np.zeros(len(ptr) - 1, dtype=np.float64)
    lengths = np.diff(ptr)
    rows = np.flatnonzero(lengths)
    if len(rows):
        weights[rows] = np.add.reduceat(per_label, ptr[rows])
    return weights


def balanced_order(index: SplitIndex, seed: int, epoch: int, samples: int) -> np.ndarray:
    """``samples`` sample numbers (positions in the split's index order, int64) drawn with replacement with
    probability proportional to ``label_weights``; a pure function of its arguments (seeded by ``seed`` and
    ``epoch``), so every rank draws the same order and a resumed run the same one again."""
    if samples < 1:
        raise ValueError(f"data.epoch_samples={samples} must be >= 1 for data.sampling=balanced")
    weights = label_weights(index)
    total = weights.sum()
    if not total > 0:
        raise ValueError(f"data.sampling=balanced: no sample of split '{index.split}' in {index.root} has a label")
    rng = np.random.default_rng([_STREAM, seed % 2**63, epoch])  # seeds may be negative
    # Inverse-CDF draws: one cumulative sum and a binary search per draw (the same as rng.choice(p=...),
    # without its O(n) checks per call); float64 keeps the ~1e-6 weights of rare classes exact enough.
    cdf = np.cumsum(weights)
    return np.searchsorted(cdf, rng.random(samples) * cdf[-1], side="right").astype(np.int64)
