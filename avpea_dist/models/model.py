"""The AV-PEA model: the shared encoder (``encoder.py``) with one task's head on top.

``AVPEAModel(cfg, head_factory)`` builds the ViT first, then the head (``head_factory(embed_dim, streams)``,
a task's ``build_head``): a seed's numbers depend on that order. State-dict names: ``vit.*``, ``tokenizer.*``
(no tensors), ``head.*``. ``forward(batch)`` is ``head(encode(frames, audio), batch)``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..config import ModelConfig
from .backbone import is_adapter_key
from .encoder import AVPEAEncoder, EncoderOutput, backbone_norm_keys  # noqa: F401  (re-exported)

HeadFactory = Callable[[int, tuple[str, ...]], nn.Module]


class AVPEAModel(AVPEAEncoder):
    """The encoder + a task head; ``forward(batch)`` -> the head's outputs. There is no default head: the task
    (``Task.build_head``) says what sits on the encoder."""

    def __init__(self, cfg: ModelConfig, head_factory: HeadFactory) -> None:
        super().__init__(cfg)
        self.head = head_factory(self.embed_dim, self.streams)
        self.freeze_backbone()

    def forward(self, batch: dict[str, Any] | torch.Tensor | None, audio: torch.Tensor | None = None) -> Any:
        """``forward(batch)``: the batch's ``frames`` and ``audio`` through the encoder, then the head with the
        whole batch (its task fields). ``forward(frames, audio)`` is the same with no task fields."""
        if not isinstance(batch, dict):
            batch = {"frames": batch, "audio": audio}
        return self.head(self.encode(batch.get("frames"), batch.get("audio")), batch)


def build_model(cfg: ModelConfig, load_weights: bool = True, *, task: Any) -> AVPEAModel:
    """The model of ``task`` (a ``tasks.base.Task``, or a head factory ``(embed_dim, streams) -> nn.Module``)."""
    factory = getattr(task, "build_head", task)
    model = AVPEAModel(cfg, factory)
    if load_weights:
        model.load_pretrained()
    return model


def param_counts(model: AVPEAModel) -> dict[str, Any]:
    backbone = sum(p.numel() for n, p in model.vit.named_parameters() if not is_adapter_key(n))
    adapter = sum(p.numel() for n, p in model.vit.named_parameters() if is_adapter_key(n))
    head = sum(p.numel() for p in model.head.parameters())
    head_trainable = sum(p.numel() for p in model.head.parameters() if p.requires_grad)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = backbone + adapter + head
    return {
        "backbone": model.cfg.backbone,
        "head": type(model.head).__name__,
        "total_params": total,
        "backbone_params": backbone,
        "adapter_params": adapter,
        "head_params": head,
        "head_trainable_params": head_trainable,
        "trainable_params": trainable,
        "trainable_share": trainable / total,
        "share_denominator": "total_params = frozen backbone without a classifier head + adapters + task head",
    }
