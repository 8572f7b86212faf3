"""The shared encoder: one frozen timm ViT, both streams, AV-PEA adapters between them.

``AVPEAEncoder.encode(frames, audio)`` runs every segment of every clip through the blocks and returns an
``EncoderOutput``: the final block's raw tokens per stream, with the ViT's final norm applied lazily by
each accessor (a head that reads only the CLS token never normalises the patch tokens). Task heads read
what they need from it; ``models/model.py`` puts a head on top.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from .backbone import StreamTokenizer, create_vit, is_adapter_key, load_backbone_weights
from .block import AdapterSpec

STREAM_OF_MODALITIES = {"av": ("a", "v"), "audio": ("a",), "visual": ("v",)}


class EncoderOutput:
    """Per-segment tokens of each present stream (``streams``: a subset of ('a', 'v')), after the final norm.

    Shapes, with B clips of T segments, N tokens per segment (CLS first) and width D: ``cls(s)`` (B, T, D),
    ``patches(s)`` (B, T, N-1, D), ``tokens(s)`` (B, T, N, D); ``grid(s)`` is the (rows, cols) of the patch
    tokens (audio: mel bins x frames, in patches). The audio and visual streams have different N."""

    def __init__(self, raw: dict[str, torch.Tensor], batch: int, segments: int, norm: nn.Module,
                 grids: dict[str, tuple[int, int]]) -> None:
        self._raw, self._norm, self._grids = raw, norm, grids
        self.batch, self.segments = batch, segments
        self.streams: tuple[str, ...] = tuple(raw)
        self._cache: dict[tuple[str, str], torch.Tensor] = {}

    def _stream(self, s: str) -> torch.Tensor:
        if s not in self._raw:
            raise KeyError(f"stream {s!r} is not in this encoding (streams: {self.streams}); a head that needs "
                           f"it substitutes zeros under the model.modalities ablations")
        return self._raw[s]

    def cls(self, s: str) -> torch.Tensor:
        if ("cls", s) not in self._cache:
            # The norm of the CLS rows only: exactly the computation AVEL's head always had.
            self._cache["cls", s] = self._norm(self._stream(s)[:, 0]).view(self.batch, self.segments, -1)
        return self._cache["cls", s]

    def tokens(self, s: str) -> torch.Tensor:
        if ("tokens", s) not in self._cache:
            x = self._norm(self._stream(s))
            self._cache["tokens", s] = x.view(self.batch, self.segments, *x.shape[1:])
        return self._cache["tokens", s]

    def patches(self, s: str) -> torch.Tensor:
        return self.tokens(s)[:, :, 1:]

    def grid(self, s: str) -> tuple[int, int]:
        self._stream(s)
        return self._grids[s]

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self._raw.values())).dtype


class AVPEAEncoder(nn.Module):
    """frames (B, T, 3, H, W) uint8 and audio (B, T, mel, frames) float -> ``EncoderOutput``.

    Holds the ViT as ``vit`` and the stream tokenizer as ``tokenizer`` (the state-dict names of every run and
    export); a subclass adds the task head as ``head`` after them (the initialisation order is part of a
    seed's result)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.streams: tuple[str, ...] = STREAM_OF_MODALITIES[cfg.modalities]
        spec = None
        if cfg.adapters:
            spec = AdapterSpec(streams=self.streams, placement=cfg.adapter_placement, bottleneck=cfg.bottleneck,
                               heads=cfg.adapter_heads, activation=cfg.adapter_activation, gate=cfg.adapter_gate,
                               norm=cfg.adapter_norm, fuse_streams=cfg.fuse_streams)
        self.vit = create_vit(cfg.backbone, cfg.img_size, spec)
        if not cfg.fuse_streams:
            for blk in self.vit.blocks:
                blk.fuse_streams = False
        self.tokenizer = StreamTokenizer(self.vit, cfg.mel_bins, cfg.audio_frames)
        self.weights_report: dict[str, Any] = {"source": "not loaded"}

    @property
    def embed_dim(self) -> int:
        return int(self.vit.embed_dim)

    def freeze_backbone(self) -> None:
        """Only adapters (and, with model.train_backbone_norms, the ViT's own norms) train in the encoder."""
        norms = backbone_norm_keys(self.vit) if self.cfg.train_backbone_norms else set()
        for name, p in self.vit.named_parameters():
            p.requires_grad_(is_adapter_key(name) or name in norms)

    def load_pretrained(self) -> dict[str, Any]:
        self.weights_report = load_backbone_weights(self.vit, self.cfg.pretrained, self.cfg.backbone)
        return self.weights_report

    def grids(self) -> dict[str, tuple[int, int]]:
        return {"a": tuple(self.tokenizer.audio_grid), "v": tuple(self.vit.patch_embed.grid_size)}

    def _blocks(self, frames: torch.Tensor | None, audio: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Flattened segments (S, ...) -> the last block's tokens per present stream, before the final norm."""
        xs = []
        if "a" in self.streams:
            xs.append(self.tokenizer.audio(audio))
        if "v" in self.streams:
            xs.append(self.tokenizer.visual(frames))
        for blk in self.vit.blocks:
            xs = blk.forward_streams(xs, self.streams)
        return dict(zip(self.streams, xs))

    def encode(self, frames: torch.Tensor | None, audio: torch.Tensor | None) -> EncoderOutput:
        """Clips -> tokens; a stream absent from ``streams`` (the ablations) is ignored even when given."""
        ref = frames if frames is not None and "v" in self.streams else audio
        if ref is None:
            raise ValueError(f"encode needs {' and '.join({'a': 'audio', 'v': 'frames'}[s] for s in self.streams)}")
        B, T = ref.shape[:2]
        raw = self._blocks(frames.flatten(0, 1) if frames is not None and "v" in self.streams else None,
                           audio.flatten(0, 1) if audio is not None and "a" in self.streams else None)
        return EncoderOutput(raw, B, T, self.vit.norm, self.grids())

    def features(self, frames: torch.Tensor | None, audio: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Per-segment CLS features of each present stream for flattened segments: {'a': (S, D), 'v': (S, D)}."""
        return {name: self.vit.norm(x[:, 0]) for name, x in self._blocks(frames, audio).items()}

    def set_backbone_dtype(self, dtype: torch.dtype) -> None:
        """Store the frozen weights in ``dtype`` once (bf16 on GPU), so no step pays for casting them;
        the trainable adapters and head keep their own dtype."""
        for p in self.vit.parameters():
            if not p.requires_grad:  # trainable backbone norms stay with the adapters' dtype
                p.data = p.data.to(dtype)

    @torch.no_grad()
    def gate_magnitudes(self) -> dict[str, list[float]]:
        """Mean |gate| of every adapter, per place and stream ('mlp_a', ...), one value per block: how far
        each block has moved from the frozen model (0 at init). 'zero_up' adapters report their up-projection."""
        values: dict[str, list[torch.Tensor]] = {}
        for blk in self.vit.blocks:
            for name, adapter in blk.adapters.items():
                values.setdefault(name, []).append(adapter.gate_magnitude())
        return {name: torch.stack(v).float().tolist() for name, v in values.items()}


def backbone_norm_keys(vit: nn.Module) -> set[str]:
    """Parameter names of the ViT's own LayerNorms (blocks' norm1/norm2, the final norm; adapters' excluded)."""
    keys = set()
    for mod_name, module in vit.named_modules():
        if isinstance(module, nn.LayerNorm) and not is_adapter_key(f".{mod_name}."):
            keys |= {f"{mod_name}.{n}" for n, _ in module.named_parameters(recurse=False)}
    return keys
