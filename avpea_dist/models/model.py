"""The dual-stream AV-PEA model: one frozen ViT, two streams, adapters between them, a task head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from .backbone import StreamTokenizer, create_vit, is_adapter_key, load_backbone_weights
from .block import AdapterSpec


class AVELHead(nn.Module):
    """Per segment: concat(audio CLS, visual CLS) -> Linear(2D, hidden) -> Linear(hidden, classes), as LAVisH."""

    def __init__(self, in_dim: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(feats))


class AVPEAModel(nn.Module):
    """frames (B, T, 3, H, W) uint8 and audio (B, T, mel, frames) float -> logits (B, T, classes)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.streams = {"av": ("a", "v"), "audio": ("a",), "visual": ("v",)}[cfg.modalities]
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
        dim = self.vit.embed_dim
        self.head = AVELHead(dim * len(self.streams), cfg.head_hidden, cfg.num_classes)
        norms = backbone_norm_keys(self.vit) if cfg.train_backbone_norms else set()
        for name, p in self.vit.named_parameters():
            p.requires_grad_(is_adapter_key(name) or name in norms)
        self.weights_report: dict[str, Any] = {"source": "not loaded"}

    def load_pretrained(self) -> dict[str, Any]:
        self.weights_report = load_backbone_weights(self.vit, self.cfg.pretrained, self.cfg.backbone)
        return self.weights_report

    def features(self, frames: torch.Tensor | None, audio: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Per-segment CLS features of each present stream: {'a': (S, D), 'v': (S, D)}."""
        xs = []
        if "a" in self.streams:
            xs.append(self.tokenizer.audio(audio))
        if "v" in self.streams:
            xs.append(self.tokenizer.visual(frames))
        for blk in self.vit.blocks:
            xs = blk.forward_streams(xs, self.streams)
        return {name: self.vit.norm(x[:, 0]) for name, x in zip(self.streams, xs)}

    def forward(self, frames: torch.Tensor | None, audio: torch.Tensor | None) -> torch.Tensor:
        ref = frames if frames is not None else audio
        B, T = ref.shape[:2]
        feats = self.features(frames.flatten(0, 1) if frames is not None and "v" in self.streams else None,
                              audio.flatten(0, 1) if audio is not None and "a" in self.streams else None)
        x = torch.cat([feats[s] for s in self.streams], dim=-1).to(self.head.fc1.weight.dtype)
        return self.head(x).float().view(B, T, -1)  # the loss is always taken in fp32

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


def build_model(cfg: ModelConfig, load_weights: bool = True) -> AVPEAModel:
    model = AVPEAModel(cfg)
    if load_weights:
        model.load_pretrained()
    return model


def param_counts(model: AVPEAModel) -> dict[str, Any]:
    backbone = sum(p.numel() for n, p in model.vit.named_parameters() if not is_adapter_key(n))
    adapter = sum(p.numel() for n, p in model.vit.named_parameters() if is_adapter_key(n))
    head = sum(p.numel() for p in model.head.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = backbone + adapter + head
    return {
        "backbone": model.cfg.backbone,
        "total_params": total,
        "backbone_params": backbone,
        "adapter_params": adapter,
        "head_params": head,
        "trainable_params": trainable,
        "trainable_share": trainable / total,
        "share_denominator": "total_params = frozen backbone without a classifier head + adapters + AVEL head",
    }
