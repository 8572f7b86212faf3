"""Classification's head: one vector per clip from the encoder's pooled audio and visual tokens, then classes.

  pooled_s = pool over the T segments of stream s's CLS token (after the ViT's final norm)   (B, D) per stream
  x        = concat(pooled_a, pooled_v)                                                     (B, D x streams)
  logits   = Linear(LayerNorm(x))                        classification.head_hidden = 0 (AST's classifier)
           = Linear(GELU(Linear(LayerNorm(x))))          head_hidden > 0

Under the model.modalities ablations the head sees the one present stream (its input is D wide, no zero
padding), as AVEL's ablations do.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ClipHead(nn.Module):
    """``head(enc, batch)`` -> logits (B, classes), fp32. ``head(features)`` on (B, in_dim) pooled features is
    the classifier alone."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 0, pooling: str = "mean",
                 dropout: float = 0.0) -> None:
        super().__init__()
        if pooling not in ("mean", "max"):
            raise ValueError(f"pooling {pooling!r}: choose 'mean' or 'max'")
        self.pooling = pooling
        self.norm = nn.LayerNorm(in_dim)
        self.drop = nn.Dropout(dropout)
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden), nn.GELU()] if hidden else []
        self.classifier = nn.Sequential(*layers, nn.Linear(hidden or in_dim, num_classes))

    def pool(self, enc: Any) -> torch.Tensor:
        """EncoderOutput -> (B, D x present streams), audio first."""
        per_stream = [enc.cls(s) for s in enc.streams]  # (B, T, D) each
        pooled = [x.mean(1) if self.pooling == "mean" else x.amax(1) for x in per_stream]
        return torch.cat(pooled, dim=-1)

    def forward(self, enc: Any, batch: dict[str, Any] | None = None) -> torch.Tensor:
        x = enc if isinstance(enc, torch.Tensor) else self.pool(enc)
        x = x.to(self.norm.weight.dtype)
        return self.classifier(self.drop(self.norm(x))).float()  # the loss is taken in fp32
