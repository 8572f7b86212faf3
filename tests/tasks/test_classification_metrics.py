"""Clip classification's numbers against brute force and hand examples: AP per class (sklearn's tie rule),
ROC AUC (pairwise count, ties one half), d', top-k, and the class prior baseline equal to the metrics of the
constant scorer it describes."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch

from avpea_dist.tasks.classification.metrics import (average_precision, clip_metrics, d_prime, prior_baseline,
                                                     roc_auc, top_k_hits)


def brute_ap(scores: list[float], targets: list[int]) -> float:
    """sklearn's definition, threshold by threshold: AP = sum over distinct thresholds t (descending) of
    (recall(t) - recall(previous t)) x precision(t), every clip scoring >= t predicted positive."""
    positives, ap, last_recall = sum(targets), 0.0, 0.0
    for t in sorted(set(scores), reverse=True):
        chosen = [y for s, y in zip(scores, targets) if s >= t]
        recall = sum(chosen) / positives
        ap += (recall - last_recall) * sum(chosen) / len(chosen)
        last_recall = recall
    return ap


def brute_auc(scores: list[float], targets: list[int]) -> float:
    pos = [s for s, y in zip(scores, targets) if y]
    neg = [s for s, y in zip(scores, targets) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def random_case(seed: int, clips: int = 57, classes: int = 150):
    g = torch.Generator().manual_seed(seed)
    # Scores on a coarse grid: many ties, the case a rank-based metric gets wrong most easily.
    scores = torch.randint(0, 7, (clips, classes), generator=g).float() / 6
    targets = (torch.rand(clips, classes, generator=g) < 0.2).float()
    targets[:, 0] = 0  # a class with no positive clip
    targets[:, 1] = 1  # a class with no negative clip
    return scores, targets


@pytest.mark.parametrize("seed", [0, 1])
def test_average_precision_matches_the_threshold_by_threshold_definition(seed):
    scores, targets = random_case(seed)  # 150 classes: three column chunks
    ap = average_precision(scores, targets)
    assert math.isnan(ap[0])
    for c in range(1, scores.shape[1]):
        if targets[:, c].sum():
            assert ap[c].item() == pytest.approx(brute_ap(scores[:, c].tolist(), targets[:, c].int().tolist()), abs=1e-12)


def test_average_precision_hand_examples():
    s = torch.tensor([[0.9], [0.8], [0.7], [0.6]])
    assert average_precision(s, torch.tensor([[1.], [0.], [1.], [0.]])).item() == pytest.approx((1 + 2 / 3) / 2)
    # All scores tied: one threshold, AP = the class's rate in the split.
    assert average_precision(torch.ones(5, 1), torch.tensor([[1.], [0.], [0.], [1.], [0.]])).item() == pytest.approx(0.4)
    # A positive tied with a negative at the top: precision 1/2 there, not 1.
    tied = torch.tensor([[0.9], [0.9], [0.1]])
    assert average_precision(tied, torch.tensor([[1.], [0.], [1.]])).item() == pytest.approx((0.5 + 2 / 3) / 2)


@pytest.mark.parametrize("seed", [0, 3])
def test_auc_matches_a_brute_force_pairwise_count(seed):
    scores, targets = random_case(seed)
    auc = roc_auc(scores, targets)
    assert math.isnan(auc[0]) and math.isnan(auc[1])  # no positive / no negative: undefined, excluded
    for c in range(2, scores.shape[1]):
        y = targets[:, c].int().tolist()
        if 0 < sum(y) < len(y):
            assert auc[c].item() == pytest.approx(brute_auc(scores[:, c].tolist(), y), abs=1e-12)


def test_d_prime_is_sqrt2_times_the_normal_quantile_of_the_auc():
    assert d_prime(0.5) == 0.0
    assert d_prime(NormalDist().cdf(1.0)) == pytest.approx(math.sqrt(2))
    for auc in (0.1, 0.73, 0.95):
        assert d_prime(auc) == pytest.approx(math.sqrt(2) * torch.special.ndtri(torch.tensor(auc, dtype=torch.float64)).item())
    assert d_prime(1.0) is None and d_prime(0.0) is None  # infinite


def test_top_k_counts_a_clip_when_one_of_its_labels_is_among_the_k_best():
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.2, 0.0, 0.05],
                           [0.9, 0.1, 0.2, 0.3, 0.4, 0.5],
                           [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    targets = torch.tensor([[0, 1, 0, 0, 0, 0],   # top-1 hit
                            [0, 1, 0, 0, 0, 0],   # rank 6: no hit at 5
                            [0, 0, 0, 0, 0, 0.]])  # no label: left out
    assert top_k_hits(scores, targets, 1) == (1, 2)
    assert top_k_hits(scores, targets, 5) == (1, 2)
    assert top_k_hits(scores, targets, 6) == (2, 2)
    assert top_k_hits(scores, targets, 50) == (2, 2)  # k beyond the classes: all of them


def test_clip_metrics_reports_the_classes_it_excludes_and_refuses_bad_scores():
    scores, targets = random_case(5, clips=40, classes=12)
    m = clip_metrics(scores, targets, [f"c{k}" for k in range(12)])
    ap = [brute_ap(scores[:, c].tolist(), targets[:, c].int().tolist()) for c in range(1, 12) if targets[:, c].sum()]
    assert m["map"] == pytest.approx(sum(ap) / len(ap))
    assert m["classes_without_positive"] == 1 and m["classes_scored"] == 11 and m["clips"] == 40
    assert m["per_class"][0] == {"class": "c0", "positives": 0, "ap": None, "auc": None}
    assert m["d_prime"] == pytest.approx(d_prime(m["mauc"]))
    with pytest.raises(ValueError, match="NaN or inf"):
        clip_metrics(torch.full((2, 12), math.nan), targets[:2], [f"c{k}" for k in range(12)])
    with pytest.raises(ValueError, match=r"must both be \(clips, 3\)"):
        clip_metrics(scores, targets, ["a", "b", "c"])


@pytest.mark.parametrize("multilabel", [False, True])
def test_the_class_prior_baseline_is_the_constant_scorers_metrics(multilabel):
    g = torch.Generator().manual_seed(7)
    classes, clips = 9, 80
    if multilabel:
        targets = (torch.rand(clips, classes, generator=g) < 0.25).float()
        targets[targets.sum(1) == 0, 0] = 1  # every clip labelled (the baseline's top-1 counts every clip)
    else:
        targets = torch.nn.functional.one_hot(torch.randint(0, classes - 1, (clips,), generator=g), classes).float()
    train_counts = [40, 3, 17, 25, 9, 31, 2, 11, 6]  # distinct: the constant scorer's class order is unambiguous
    prior = torch.tensor(train_counts, dtype=torch.float32) / sum(train_counts)
    m = clip_metrics(prior.expand(clips, classes), targets, [str(k) for k in range(classes)])
    b = prior_baseline(train_counts, [int(n) for n in targets.sum(0).tolist()], clips, multilabel)
    assert b["map"] == pytest.approx(m["map"]) and b["top1"] == pytest.approx(m["top1"])
    assert m["mauc"] == b["mauc"] == 0.5 and b["d_prime"] == 0.0
    assert (b["top5"] == pytest.approx(m["top5"])) if not multilabel else b["top5"] is None
    assert m["classes_without_positive"] == (0 if multilabel else 1)  # the last class never occurs single-label
