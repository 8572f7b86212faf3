"""A timm ViT ``Block`` that carries AV-PEA adapters and runs both streams through its frozen weights.

It enters timm the way timm intends (``block_fn``), so the frozen weights keep timm's key names and a
plain ViT checkpoint loads into it with only the adapter keys missing.

``forward_streams`` takes one or two streams: (audio, visual) for the AV-PEA model, or one stream for
the single-modality ablations (whose adapters then attend to their own stream). Token-wise frozen
layers (norms, qkv, proj, MLP) can run on both streams packed into one call (``fuse_streams``): the
math is identical and the matrix products get larger; only the attention core runs per stream
because the two streams have different token counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from .adapter import AVPEAAdapter

STREAMS = ("a", "v")


@dataclass(frozen=True)
class AdapterSpec:
    """What each block builds; ``None`` in place of a spec means a block without adapters."""

    streams: tuple[str, ...]  # which streams the model has: ("a", "v"), ("a",) or ("v",)
    placement: str = "mlp"  # 'mlp', 'attn' or 'both'
    bottleneck: int = 0  # 0 -> dim // 8
    heads: int = 1
    activation: str = "gelu"
    gate: str = "scalar"
    norm: bool = True
    fuse_streams: bool = True


class AVPEABlock(Block):
    def __init__(self, dim: int, num_heads: int, *args, adapter: AdapterSpec | None = None, **kwargs) -> None:
        super().__init__(dim, num_heads, *args, **kwargs)
        self.fuse_streams = adapter.fuse_streams if adapter else True
        self.adapters = nn.ModuleDict()
        if adapter is None:
            return
        places = ("attn", "mlp") if adapter.placement == "both" else (adapter.placement,)
        r = adapter.bottleneck or dim // 8
        for place in places:
            for s in adapter.streams:
                self.adapters[f"{place}_{s}"] = AVPEAAdapter(dim, r, adapter.heads, adapter.activation,
                                                             adapter.gate, adapter.norm)

    def _tokenwise(self, fn: Callable[[torch.Tensor], torch.Tensor], xs: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.fuse_streams and len(xs) > 1:
            sizes = [x.shape[1] for x in xs]
            return list(fn(torch.cat(xs, dim=1)).split(sizes, dim=1))
        return [fn(x) for x in xs]

    def _attention(self, hs: list[torch.Tensor]) -> list[torch.Tensor]:
        """timm's Attention.forward, with the token-wise projections shared across streams."""
        attn = self.attn
        qkvs = self._tokenwise(attn.qkv, hs)
        outs = []
        for qkv in qkvs:
            B, N, _ = qkv.shape
            q, k, v = qkv.reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            q, k = attn.q_norm(q), attn.k_norm(k)
            o = F.scaled_dot_product_attention(q, k, v)
            outs.append(o.transpose(1, 2).reshape(B, N, attn.num_heads * attn.head_dim))
        outs = self._tokenwise(getattr(attn, "norm", nn.Identity()), outs)
        gate = getattr(attn, "gate", None)
        if gate is not None:
            outs = [o * g.sigmoid() for o, g in zip(outs, self._tokenwise(gate, hs))]
        return self._tokenwise(attn.proj, outs)

    def _adapt(self, place: str, names: tuple[str, ...], hs: list[torch.Tensor]) -> list[torch.Tensor | None]:
        out: list[torch.Tensor | None] = []
        for i, name in enumerate(names):
            adapter = self.adapters[f"{place}_{name}"] if f"{place}_{name}" in self.adapters else None
            other = hs[1 - i] if len(hs) == 2 else hs[i]
            out.append(adapter(hs[i], other) if adapter is not None else None)
        return out

    def forward_streams(self, xs: list[torch.Tensor], names: tuple[str, ...]) -> list[torch.Tensor]:
        hs = self._tokenwise(self.norm1, xs)
        deltas = self._attention(hs)
        extra = self._adapt("attn", names, hs)
        xs = [x + self.drop_path1(self.ls1(d)) + (e if e is not None else 0) for x, d, e in zip(xs, deltas, extra)]
        hs = self._tokenwise(self.norm2, xs)
        deltas = self._tokenwise(lambda t: self.ls2(self.mlp(t)), hs)
        extra = self._adapt("mlp", names, hs)
        return [x + self.drop_path2(d) + (e if e is not None else 0) for x, d, e in zip(xs, deltas, extra)]
