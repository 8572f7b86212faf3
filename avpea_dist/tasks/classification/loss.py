"""Classification's training objectives on logits (B, classes) and multi-hot targets (B, classes).

* single-label: softmax cross-entropy against the clip's one class, mean over clips.
* multi-label: binary cross-entropy with logits per class, mean over clips x classes (the objective of the
  AudioSet models, AST and PANNs among them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_loss(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool, reduction: str = "mean"
              ) -> torch.Tensor:
    """The objective of ``classification.multilabel``; ``reduction='sum'`` sums over clips (per clip: the
    cross-entropy, or the mean over classes of the binary terms), for evaluation totals."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction {reduction!r}: choose 'mean' or 'sum'")
    if multilabel:
        per_clip = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none").mean(1)
    else:
        per_clip = F.cross_entropy(logits.float(), targets.argmax(1), reduction="none")
    return per_clip.mean() if reduction == "mean" else per_clip.sum()
