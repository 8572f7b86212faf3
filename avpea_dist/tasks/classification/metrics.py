"""Classification's numbers, computed once over every clip of a split (rows gathered by the trainer).

* ``top1`` / ``top5``: a clip counts as right when one of its labels is among the k highest-scored classes
  (single-label: the usual top-k accuracy; multi-label: a hit at k). Clips with no label (possible in a
  multi-label set) cannot be hit and are left out of both.
* ``map``: average precision of each class over all the split's clips, then the mean over classes, as the
  AudioSet papers report it (sklearn's ``average_precision_score`` per class: tied scores form one threshold,
  AP = sum over thresholds of (recall step) x precision). Classes with no positive clip in the split have no
  AP and are excluded; ``classes_scored`` / ``classes_without_positive`` say how many.
* ``mauc``: the mean over classes of the ROC AUC (the Mann-Whitney statistic, ties counted one half); classes
  with no positive or no negative clip are excluded. ``d_prime`` = sqrt(2) x Phi^-1(mauc), computed from the
  mean AUC as AudioSet papers do (None where it is infinite: mauc 0 or 1).

Everything is computed in float64 on the CPU, class columns a chunk at a time (AudioSet's test split:
~20k clips x 527 classes). The class prior baseline (``prior_baseline``) is the same numbers for a constant
scorer that gives every clip the training split's label frequencies.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Sequence

import torch

CHUNK = 64
"""Class columns scored at once (memory: a few (clips, CHUNK) float64 tensors)."""


def _tie_groups(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns of ``s`` sorted along dim 0 -> (size of each entry's tie group, 0-based position of the last
    entry of its group), both (N, C)."""
    new = torch.ones_like(s, dtype=torch.bool)
    new[1:] = s[1:] != s[:-1]
    gid = new.long().cumsum(0) - 1
    counts = torch.zeros_like(gid).scatter_add_(0, gid, torch.ones_like(gid))
    return counts.gather(0, gid), counts.cumsum(0).gather(0, gid) - 1


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """scores (N, C), targets (N, C) in {0, 1} -> (C,) float64 AP per class, NaN for a class with no positive."""
    out = []
    for lo in range(0, scores.shape[1], CHUNK):
        s, order = scores[:, lo:lo + CHUNK].double().sort(0, descending=True)
        t = targets[:, lo:lo + CHUNK].double().gather(0, order)
        tp = t.cumsum(0)
        _, end = _tie_groups(s)
        precision_at_threshold = tp.gather(0, end) / (end + 1).double()
        positives = t.sum(0)
        ap = (t * precision_at_threshold).sum(0) / positives
        out.append(torch.where(positives > 0, ap, torch.full_like(ap, math.nan)))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def roc_auc(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """scores (N, C), targets (N, C) in {0, 1} -> (C,) float64 ROC AUC per class from tie-averaged ranks,
    NaN for a class without both a positive and a negative clip."""
    out = []
    for lo in range(0, scores.shape[1], CHUNK):
        s, order = scores[:, lo:lo + CHUNK].double().sort(0)
        t = targets[:, lo:lo + CHUNK].double().gather(0, order)
        size, end = _tie_groups(s)
        rank = (end + 1).double() - (size - 1).double() / 2  # 1-based, the mean rank of the tie group
        p = t.sum(0)
        n = t.shape[0] - p
        auc = ((t * rank).sum(0) - p * (p + 1) / 2) / (p * n)
        out.append(torch.where((p > 0) & (n > 0), auc, torch.full_like(auc, math.nan)))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def d_prime(auc: float) -> float | None:
    """sqrt(2) x Phi^-1(auc): the separation of two unit normals with that AUC; None at 0 or 1 (infinite)."""
    if not 0.0 < auc < 1.0:
        return None
    return math.sqrt(2.0) * NormalDist().inv_cdf(auc)


def top_k_hits(scores: torch.Tensor, targets: torch.Tensor, k: int) -> tuple[int, int]:
    """(clips with a label among their k highest-scored classes, clips with at least one label)."""
    labelled = targets.sum(1) > 0
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    hit = targets.gather(1, top).sum(1) > 0
    return int((hit & labelled).sum()), int(labelled.sum())


def _mean(values: torch.Tensor) -> float | None:
    keep = values[~values.isnan()]
    return float(keep.mean()) if keep.numel() else None


def clip_metrics(scores: torch.Tensor, targets: torch.Tensor, names: Sequence[str]) -> dict[str, Any]:
    """Every clip's class scores (N, C) and multi-hot targets (N, C) -> {'top1', 'top5', 'map', 'mauc',
    'd_prime', 'clips', 'labelled_clips', 'classes_scored', 'classes_without_positive', 'per_class'}.
    ``per_class`` (nested: result.json only) is [{'class', 'positives', 'ap', 'auc'}] in class order."""
    if scores.shape != targets.shape or scores.dim() != 2 or scores.shape[1] != len(names):
        raise ValueError(f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} must both be "
                         f"(clips, {len(names)})")
    if scores.shape[0] == 0:
        raise ValueError("the evaluation split yielded no clips; check data.shards (avpea shards verify)")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("the model's class scores hold NaN or inf: the run diverged; check its metrics.jsonl")
    targets = (targets > 0).to(torch.float64)
    ap, auc = average_precision(scores, targets), roc_auc(scores, targets)
    (hit1, labelled), (hit5, _) = top_k_hits(scores, targets, 1), top_k_hits(scores, targets, 5)
    mauc = _mean(auc)
    positives = targets.sum(0)
    return {"top1": hit1 / labelled if labelled else None, "top5": hit5 / labelled if labelled else None,
            "map": _mean(ap), "mauc": mauc, "d_prime": None if mauc is None else d_prime(mauc),
            "clips": int(scores.shape[0]), "labelled_clips": labelled,
            "classes_scored": int((positives > 0).sum()), "classes_without_positive": int((positives == 0).sum()),
            "per_class": [{"class": name, "positives": int(p), "ap": None if math.isnan(a) else round(float(a), 6),
                           "auc": None if math.isnan(u) else round(float(u), 6)}
                          for name, p, a, u in zip(names, positives.tolist(), ap.tolist(), auc.tolist())]}


def prior_baseline(train_counts: Sequence[int], eval_counts: Sequence[int], eval_clips: int,
                   multilabel: bool) -> dict[str, Any]:
    """The constant scorer that gives every clip the training split's label frequencies, on a split with
    ``eval_counts`` positives per class out of ``eval_clips`` clips. Its AP of a class is that class's rate
    in the split (every clip tied), its AUC one half; its top-k classes are the k most frequent in train (ties
    to the lower index, as a stable sort orders them). top5 needs the labels per clip on a multi-label set:
    None there."""
    if len(train_counts) != len(eval_counts):
        raise ValueError(f"{len(train_counts)} train class counts against {len(eval_counts)} evaluation ones")
    if eval_clips <= 0:
        return {}
    order = sorted(range(len(train_counts)), key=lambda c: -train_counts[c])
    rates = [n / eval_clips for n in eval_counts if n > 0]
    top5 = sum(eval_counts[c] for c in order[:5]) / eval_clips if not multilabel else None
    return {"top1": eval_counts[order[0]] / eval_clips, "top5": top5,
            "map": sum(rates) / len(rates) if rates else None, "mauc": 0.5, "d_prime": 0.0}
