"""AVEL's numbers: per-segment accuracy (overall, event, background), every sample counted once across ranks.

The eval loader gives each rank a disjoint share of the split (ranks may get different numbers of
batches), so the loop runs without collectives and one all-reduce of the counts ends it.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from ...train.loop import all_reduce_


@torch.no_grad()
def evaluate_segments(model: nn.Module, batches: Iterable[dict[str, Any]], device: torch.device, modalities: str,
                      num_classes: int) -> dict[str, Any]:
    """-> {'accuracy', 'loss', 'segments', 'clips', 'label_counts', 'skipped', 'accuracy_event',
    'accuracy_background'} over the whole split. Background is the last class; the event accuracy is over
    segments labelled with an event, the background accuracy over the others (None when there are none)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.float64)
    correct_bg = torch.zeros((), dtype=torch.float64)
    loss_sum = torch.zeros((), dtype=torch.float64)
    label_counts = torch.zeros(num_classes, dtype=torch.float64)
    clips = torch.zeros((), dtype=torch.float64)
    skipped = torch.zeros((), dtype=torch.float64)
    for batch in batches:
        labels = batch["labels"]
        frames = batch["frames"].to(device) if modalities != "audio" else None
        audio = batch["audio"].to(device) if modalities != "visual" else None
        logits = model(frames, audio).float().cpu()
        loss_sum += torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(),
                                                      reduction="sum").double()
        hits = logits.argmax(-1) == labels
        correct += hits.sum().double()
        correct_bg += (hits & (labels == num_classes - 1)).sum().double()
        label_counts += torch.bincount(labels.flatten(), minlength=num_classes)[:num_classes].double()
        clips += labels.shape[0]
        skipped += int(batch.get("skipped", 0))
    packet = all_reduce_(torch.cat([torch.stack([correct, loss_sum, clips, skipped, correct_bg]), label_counts]))
    model.train(was_training)
    counts = packet[5:]
    segments = counts.sum().item()
    if segments == 0:
        raise ValueError("the evaluation split yielded no samples on any rank; check the shards folder and "
                         "its manifest (avpea shards verify)")
    background, hits, hits_bg = counts[-1].item(), packet[0].item(), packet[4].item()
    return {"accuracy": hits / segments, "loss": packet[1].item() / segments,
            "segments": int(segments), "clips": int(packet[2].item()), "skipped": int(packet[3].item()),
            "label_counts": [int(c) for c in counts.tolist()],
            "accuracy_event": (hits - hits_bg) / (segments - background) if segments > background else None,
            "accuracy_background": hits_bg / background if background else None}


def majority_accuracy(train_label_counts: list[int], eval_label_counts: list[int]) -> float:
    """Accuracy of always predicting the training split's most frequent class."""
    majority = max(range(len(train_label_counts)), key=lambda c: train_label_counts[c])
    total = sum(eval_label_counts)
    return eval_label_counts[majority] / total if total else 0.0
