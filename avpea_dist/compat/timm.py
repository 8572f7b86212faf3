"""timm internals: the position-embedding step of a VisionTransformer."""

from __future__ import annotations

from typing import Any

DIST = "timm"
CHECKED = ">=1.0.20,<1.1"
VERIFIED = "1.0.31"


def vit_pos_embed(vit: Any, tokens: Any) -> Any:
    """(B, N, D) patch tokens -> (B, prefix + N, D): class/register tokens prepended, position embedding added.

    Reaches ``VisionTransformer._pos_embed``. The model runs the frozen ViT's blocks itself (adapters sit
    between them), so it needs this step alone; ``forward_features`` runs it fused with the blocks, and the
    method handles the variants (dynamic image size, no class token, registers) a re-implementation would
    have to copy.
    """
    return vit._pos_embed(tokens)
