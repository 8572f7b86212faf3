"""Class-balanced sampling (data/balanced.py): AudioSet recipes' weights, seeded by (seed, epoch), a pure
function of its arguments, label frequencies flattened."""

from __future__ import annotations

import numpy as np
import pytest

from avpea_dist.config import DataConfig
from avpea_dist.config_load import ConfigError
from avpea_dist.data.balanced import balanced_order, label_weights
from avpea_dist.data.index import Labels, SplitIndex


def _index(labels: list[list[int]] | None) -> SplitIndex:
    n = len(labels) if labels is not None else 4
    counts = np.array([n], dtype=np.int64)
    csr = None
    if labels is not None:
        csr = Labels(np.concatenate([[0], np.cumsum([len(x) for x in labels])]).astype(np.int64),
                     np.array([c for x in labels for c in x], dtype=np.int32))
    return SplitIndex("/shards", "train", {}, ["train-000000.tar"], counts, counts * 0, [None], None, None,
                      np.zeros(1, np.int64), csr)


def test_weights_are_the_sum_of_inverse_label_frequencies() -> None:
    idx = _index([[0], [0, 1], [1], [0], [], [2]])  # n_0 = 3, n_1 = 2, n_2 = 1
    assert np.allclose(label_weights(idx), [1 / 3, 1 / 3 + 1 / 2, 1 / 2, 1 / 3, 0, 1])
    assert np.isclose(label_weights(idx).sum(), 3)  # one per class present


def test_draws_flatten_label_frequencies() -> None:
    rng = np.random.default_rng(0)
    # 95 % of samples carry class 0; class 1 on 4 %, class 2 on 1 %; some also carry class 0 (multi-label).
    labels = [[0]] * 950 + [[1]] * 30 + [[1, 0]] * 10 + [[2]] * 10
    labels = [labels[i] for i in rng.permutation(len(labels))]
    idx = _index(labels)
    order = balanced_order(idx, seed=3, epoch=0, samples=60_000)
    assert order.dtype == np.int64 and order.min() >= 0 and order.max() < len(labels)
    drawn = np.bincount([c for i in order for c in labels[i]], minlength=3) / len(order)
    # Each class on about a third of the draws, where reading in order sees class 2 on 1 % of them. Exactly:
    # P(sample i) = w_i / 3 (n_0 = 960, n_1 = 40, n_2 = 10); class 0 rides along with the [1, 0] samples.
    expected = np.array([950 / 960 + 10 * (1 / 40 + 1 / 960), 30 / 40 + 10 * (1 / 40 + 1 / 960), 1]) / 3
    assert np.all(np.abs(drawn - expected) < 0.01), (drawn, expected)
    never = [i for i, x in enumerate(labels) if not x]
    assert not never and set(np.unique(order)) <= set(range(len(labels)))


def test_seeded_by_seed_and_epoch_and_a_pure_function() -> None:
    idx = _index([[i % 7] for i in range(500)])
    a = balanced_order(idx, seed=1, epoch=4, samples=1000)
    np.random.seed(123)  # global state (or any other draw) changes nothing: a resumed run recomputes it
    np.random.default_rng(9).random(10)
    assert np.array_equal(a, balanced_order(idx, seed=1, epoch=4, samples=1000))
    assert np.array_equal(a[:300], balanced_order(idx, seed=1, epoch=4, samples=300))  # a prefix is stable
    assert not np.array_equal(a, balanced_order(idx, seed=1, epoch=5, samples=1000))
    assert not np.array_equal(a, balanced_order(idx, seed=2, epoch=4, samples=1000))
    assert len(balanced_order(idx, seed=-7, epoch=0, samples=3)) == 3  # negative seeds accepted


def test_unlabelled_samples_are_never_drawn_and_errors_name_the_fix() -> None:
    idx = _index([[], [1], [], [1]])
    assert set(balanced_order(idx, seed=0, epoch=0, samples=200).tolist()) == {1, 3}
    with pytest.raises(ValueError, match="has none .*rebuild the shards with this version, or use "
                                         "data.sampling=sequential"):
        balanced_order(_index(None), seed=0, epoch=0, samples=5)
    with pytest.raises(ValueError, match="no sample of split 'train' in /shards has a label"):
        balanced_order(_index([[], []]), seed=0, epoch=0, samples=5)
    with pytest.raises(ValueError, match="data.epoch_samples=0 must be >= 1"):
        balanced_order(idx, seed=0, epoch=0, samples=0)


def test_config_fields() -> None:
    assert (DataConfig().sampling, DataConfig().epoch_samples) == ("sequential", 0)
    with pytest.raises(ConfigError, match="data.sampling='weighted' must be 'sequential' or 'balanced'"):
        DataConfig(sampling="weighted")
    with pytest.raises(ConfigError, match="data.epoch_samples"):
        DataConfig(epoch_samples=-1)
