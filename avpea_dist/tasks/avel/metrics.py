"""AVEL's numbers: per-segment accuracy (overall, event, background) and the majority-class baseline.

A batch's logits become additive counts (``segment_sums``); the trainer sums them over batches and ranks,
and ``segment_metrics`` turns the totals into fractions, so every segment of the split counts once.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def segment_sums(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, torch.Tensor]:
    """logits (B, T, classes) fp32 and labels (B, T) of one batch -> float64 counts: 'correct', 'correct_bg'
    (right on background segments), 'loss' (summed cross-entropy), 'label_counts' (classes,), 'clips'."""
    hits = logits.argmax(-1) == labels
    return {"correct": hits.sum().double(),
            "correct_bg": (hits & (labels == num_classes - 1)).sum().double(),
            "loss": F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum").double(),
            "label_counts": torch.bincount(labels.flatten(), minlength=num_classes)[:num_classes].double(),
            "clips": torch.tensor(float(labels.shape[0]), dtype=torch.float64)}


def segment_metrics(sums: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The split's totals -> {'accuracy', 'loss', 'segments', 'clips', 'label_counts', 'accuracy_event',
    'accuracy_background'}. Background is the last class; the event accuracy is over segments labelled with
    an event, the background accuracy over the others (None when there are none)."""
    counts = sums["label_counts"]
    segments = counts.sum().item()
    if segments == 0:
        raise ValueError("the evaluation split yielded no samples on any rank; check the shards folder and "
                         "its manifest (avpea shards verify)")
    background, hits, hits_bg = counts[-1].item(), sums["correct"].item(), sums["correct_bg"].item()
    return {"accuracy": hits / segments, "loss": sums["loss"].item() / segments,
            "segments": int(segments), "clips": int(sums["clips"].item()),
            "label_counts": [int(c) for c in counts.tolist()],
            "accuracy_event": (hits - hits_bg) / (segments - background) if segments > background else None,
            "accuracy_background": hits_bg / background if background else None}


def majority_accuracy(train_label_counts: list[int], eval_label_counts: list[int]) -> float:
    """Accuracy of always predicting the training split's most frequent class."""
    majority = max(range(len(train_label_counts)), key=lambda c: train_label_counts[c])
    total = sum(eval_label_counts)
    return eval_label_counts[majority] / total if total else 0.0
