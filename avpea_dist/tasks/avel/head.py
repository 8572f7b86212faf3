"""AVEL's head, as LAVisH: per segment, concat(audio CLS, visual CLS) -> Linear(2D, hidden) -> Linear(hidden,
classes)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class AVELHead(nn.Module):
    """``head(enc, batch)`` -> logits (B, T, classes), fp32.

    Its input width is D times the number of present streams: under the model.modalities ablations the
    head sees the one stream (no zero padding), as AVEL's ablations always did."""

    def __init__(self, in_dim: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, enc: Any, batch: dict[str, Any] | None = None) -> torch.Tensor:
        if isinstance(enc, torch.Tensor):  # (S, in_dim) features: the plain MLP
            return self.fc2(self.fc1(enc))
        # (B*T, D) rows per stream, concatenated: the very operations of the pre-plug-in model.
        x = torch.cat([enc.cls(s).flatten(0, 1) for s in enc.streams], dim=-1).to(self.fc1.weight.dtype)
        return self.fc2(self.fc1(x)).float().view(enc.batch, enc.segments, -1)  # the loss is taken in fp32
