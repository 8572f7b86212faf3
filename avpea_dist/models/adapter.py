"""The AV-PEA adapter: a bottleneck adapter whose stream CLS token gathers cues from the other stream.

Reconstruction (no public code exists; see docs/method.md):

* AV-PEA (Radman & Laaksonen, VISAPP 2024) inserts one adapter per block per stream into a frozen,
  shared image ViT. Cross-modal exchange goes through the stream's CLS token, which attends to the
  other stream's tokens, so the cost is linear in the number of tokens.
* The paper's budget (12.9M trainable parameters on ViT-L/16, D=1024, 24 blocks, 2 streams) fits one
  D -> D/8 -> D bottleneck with biases per block per stream (263,296 parameters each, 12.64M in all)
  plus norms and gates. Full D x D query/key/value projections would not fit, so the cross-attention
  here works *inside the bottleneck*: the shared down-projection maps both streams to r dimensions,
  the stream's CLS (the query) attends to the other stream's tokens (keys = values), and the r-dim
  cue it gathers is broadcast back to every token of the stream before the activation.
* The result joins the frozen residual stream through a gate initialised at zero (LAVisH's form), so
  at step 0 the adapted model computes exactly the frozen model's features.

Free choices, each a ModelConfig option: placement (mlp / attn / both), bottleneck width (D/8),
activation (GELU), gate form (scalar), a trainable LayerNorm on the adapter inputs (on), heads (1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


class AVPEAAdapter(nn.Module):
    """x (B, N, D), other (B, M, D) -> gated update (B, N, D) for the stream ``x``."""

    def __init__(self, dim: int, bottleneck: int, heads: int = 1, activation: str = "gelu",
                 gate: str = "scalar", norm: bool = True) -> None:
        super().__init__()
        if bottleneck % heads:
            raise ValueError(f"adapter heads ({heads}) must divide the bottleneck width ({bottleneck})")
        self.heads = heads
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()
        self.down = nn.Linear(dim, bottleneck)
        self.act = _ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, dim)
        self.gate_form = gate
        if gate == "zero_up":  # the up-projection itself starts at zero (LoRA-style), no gate
            self.register_parameter("gate", None)
        else:
            self.gate = nn.Parameter(torch.zeros(1 if gate == "scalar" else dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero-init that makes step 0 the frozen model. Called again after timm's ViT-wide weight init,
        which would otherwise overwrite every Linear it finds, ours included."""
        self.down.reset_parameters()
        self.up.reset_parameters()
        nn.init.zeros_(self.down.bias)
        if self.gate is None:
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)
        else:
            nn.init.zeros_(self.gate)

    def gate_magnitude(self) -> torch.Tensor:
        """Mean |gate| (or mean |up-projection| without a gate): 0 at init, the adapter's reach now."""
        w = self.gate if self.gate is not None else self.up.weight
        return w.detach().abs().mean()

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        # The adapter may keep fp32 weights beside a bf16 frozen backbone: compute in its own dtype.
        dtype = self.down.weight.dtype
        h = self.down(self.norm(x.to(dtype)))  # (B, N, r)
        kv = self.down(self.norm(other.to(dtype)))  # (B, M, r): the other stream in the same bottleneck space
        cue = self._cls_attend(h[:, :1], kv)  # (B, 1, r): what this stream's CLS gathered
        out = self.up(self.act(h + cue))  # the cue reaches every token through the broadcast: O(N + M)
        out = out if self.gate is None else out * self.gate
        return out.to(x.dtype)

    def _cls_attend(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        B, M, r = kv.shape
        H = self.heads
        q = q.reshape(B, 1, H, r // H).transpose(1, 2)
        kv = kv.reshape(B, M, H, r // H).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, kv, kv)  # (B, H, 1, r/H)
        return out.transpose(1, 2).reshape(B, 1, r)
