"""The adapter file of a run (RUN/best, RUN/final): adapters and head only, as safetensors (a few MB for
ViT-L, no pickle). The model folder to share is built from it by ``modelfolder.export_run``.

The file's metadata carries the encoder's config and the task's own bound settings (``Task.signature``,
e.g. AVEL's class count), so ``avpea eval`` and ``avpea predict`` can refuse an export made for another
backbone or head with a message instead of a shape error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from ..fileio import atomic_write_bytes


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", torch.float32).contiguous() for n, p in model.named_parameters()
            if p.requires_grad}


def export_trainable(model: nn.Module, path: Path, model_cfg: ModelConfig, meta: dict[str, Any],
                     signature: dict[str, Any] | None = None) -> Path:
    """Write the trainable tensors; ``meta`` (plain JSON) goes into the header, ``signature`` (the task's
    ``Task.signature()``) too, checked by ``load_trainable``."""
    from safetensors.torch import save

    metadata = {"format": "avpea-adapters-v1", "model": json.dumps(vars(model_cfg)),
                **{k: json.dumps(v) for k, v in meta.items()}}
    if signature:
        metadata[SIGNATURE] = json.dumps(signature)
    atomic_write_bytes(path, save(trainable_state(model), metadata=metadata))
    return path


SIGNATURE = "task_signature"
"""The header key of the task's bound settings."""

_MUST_MATCH = ("backbone", "img_size", "modalities", "adapters", "bottleneck", "adapter_placement", "adapter_gate",
               "adapter_heads", "adapter_norm", "train_backbone_norms")
"""The encoder's settings an export must share with the config; the task's come from ``Task.signature``."""


def load_trainable(model: nn.Module, path: str | Path, model_cfg: ModelConfig,
                   signature: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load an export into ``model``; every trainable tensor must be present, nothing else. ``signature``
    (the task's ``Task.signature()``) must agree with the file's on every key both have. Returns meta."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"adapter file '{path}' does not exist; pass RUN/best/adapters.safetensors or "
                                f"RUN/final/adapters.safetensors from a training run")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own types for a bad header
        raise ValueError(f"adapter file '{path}' is not a readable safetensors file: {e}") from None
    if meta.get("format") != "avpea-adapters-v1":
        raise ValueError(f"'{path}' is not an avpea adapter export (no 'avpea-adapters-v1' format tag)")
    saved = json.loads(meta.get("model", "{}"))
    wrong = [f"model.{k}: file {saved.get(k)!r} vs config {getattr(model_cfg, k)!r}" for k in _MUST_MATCH
             if k in saved and saved[k] != getattr(model_cfg, k)]
    bound = json.loads(meta.get(SIGNATURE, "{}"))
    wrong += [f"{k}: file {bound[k]!r} vs config {v!r}" for k, v in (signature or {}).items()
              if k in bound and bound[k] != v]
    if wrong:
        raise ValueError(f"adapter file '{path}' was trained with another model configuration ({'; '.join(wrong)}); "
                         f"evaluate it with the config it was trained with (RUN/config.yaml)")
    expected = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"adapter file '{path}' does not fit the model: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}")
    with torch.no_grad():
        for n, p in expected.items():
            if state[n].shape != p.shape:
                raise ValueError(f"adapter file '{path}': '{n}' has shape {tuple(state[n].shape)}, the model "
                                 f"expects {tuple(p.shape)}")
            p.copy_(state[n].to(p.dtype))
    return {k: v for k, v in meta.items() if k != "format"}
