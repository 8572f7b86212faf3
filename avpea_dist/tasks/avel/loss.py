"""AVEL's per-segment training objectives, chosen by ``avel.loss``; ``AVELTask.loss`` applies the chosen one.

Both take logits (B, T, classes) and integer labels (B, T) and return a scalar.

* ``ce``: softmax cross-entropy averaged over segments, the default and AV-PEA's objective here.
* ``bce_softmax``: LAVisH's AVE objective. Its model ends in ``F.softmax`` and its loop applies
  ``nn.BCELoss()`` against the one-hot segment targets, so every class of every segment is a binary
  term and the mean runs over segments x classes. Computed here from the logits without forming p:
  log p_k = z_k - logsumexp(z) and log(1 - p_k) = logsumexp over the other classes - logsumexp(z), both
  finite with finite gradients even where p rounds to 0 or 1; each log is clamped at -100 as
  ``BCELoss`` does.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def segment_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every segment of every clip (``avel.loss='ce'``)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())


cross_entropy = segment_loss  # its name in ``LOSSES``

_LOG_CLAMP = -100.0  # what torch's BCELoss does to log(0)


def bce_softmax(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``BCELoss(softmax(logits), one_hot(labels))``: mean over segments and classes."""
    z = logits.flatten(0, 1).float()  # (N, C)
    classes = z.shape[-1]
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    log_p = z - lse
    # Row k of ``others`` is z with class k masked out: C x C per segment, trivial for 29 classes.
    eye = torch.eye(classes, dtype=torch.bool, device=z.device)
    others = z.unsqueeze(1).masked_fill(eye, float("-inf"))  # (N, C, C)
    log_q = torch.logsumexp(others, dim=-1) - lse  # log(1 - p_k)
    target = F.one_hot(labels.flatten(), classes).to(z.dtype)
    terms = target * log_p.clamp(min=_LOG_CLAMP) + (1 - target) * log_q.clamp(min=_LOG_CLAMP)
    return -terms.mean()


LOSSES: dict[str, LossFn] = {"ce": cross_entropy, "bce_softmax": bce_softmax}


def loss_for(name: str) -> LossFn:
    """The objective named by ``avel.loss`` (the config has already checked the name)."""
    return LOSSES[name]
