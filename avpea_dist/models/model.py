"""The AV-PEA model: the shared encoder (``encoder.py``) with one task's head on top.

``AVPEAModel(cfg, head_factory)`` builds the ViT first, then the head (``head_factory(embed_dim, streams)``,
a task's ``build_head``): a seed's numbers depend on that order. State-dict names: ``vit.*``, ``tokenizer.*``
(no tensors), ``head.*``. ``forward(batch)`` is ``head(encode(frames, audio), batch)``.

The class follows huggingface_hub's ``ModelHubMixin``: ``AVPEAModel.from_pretrained(DIR or hub id)`` reads
an export folder (``pretrained.py``: `avpea export`, or a run's ``RUN/model/``), ``save_pretrained`` and
``push_to_hub`` write one from a model loaded that way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from huggingface_hub import ModelHubMixin
from torch import nn

from ..config import ModelConfig
from .backbone import is_adapter_key
from .encoder import AVPEAEncoder, EncoderOutput, backbone_norm_keys  # noqa: F401  (re-exported)

HeadFactory = Callable[[int, tuple[str, ...]], nn.Module]


class AVPEAModel(AVPEAEncoder, ModelHubMixin, library_name="avpea-dist", tags=["audio-visual", "avpea", "adapters"]):
    """The encoder + a task head; ``forward(batch)`` -> the head's outputs. There is no default head: the task
    (``Task.build_head``) says what sits on the encoder."""

    exported: Any = None
    """A model read by ``from_pretrained``: its export (``pretrained.Exported``: config, task, manifest)."""

    def __init__(self, cfg: ModelConfig, head_factory: HeadFactory) -> None:
        super().__init__(cfg)
        self.head = head_factory(self.embed_dim, self.streams)
        self.freeze_backbone()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> "AVPEAModel":
        """An export folder or a hub id (``user/name``) -> the model, eval mode, with ``model.exported`` (its
        task, config, manifest). Keywords: huggingface_hub's (``revision``, ``cache_dir``, ``token``,
        ``local_files_only``, ``force_download``) and ``device``, ``overrides`` (dotted settings, checked
        against what the export is bound to), ``backbone_weights`` (the frozen weights' new place)."""
        from .pretrained import resolve_folder

        name = str(pretrained_model_name_or_path)
        hub = {k: kwargs.pop(k) for k in ("revision", "cache_dir", "force_download", "local_files_only", "token")
               if k in kwargs}
        folder = resolve_folder(name, **hub)  # the whole snapshot: text folders come with config.json
        return super().from_pretrained(str(folder), **hub, **kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None = None, cache_dir: str | Path | None = None,
                         force_download: bool = False, local_files_only: bool = False,
                         token: str | bool | None = None, config: dict[str, Any] | None = None,
                         device: str = "cpu", overrides: list[str] | tuple[str, ...] = (),
                         backbone_weights: str | None = None, **unused: Any) -> "AVPEAModel":
        from .pretrained import load_folder, resolve_folder

        folder = resolve_folder(model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                                local_files_only=local_files_only, token=token)
        return load_folder(cls, folder, device=device, overrides=overrides, backbone_weights=backbone_weights)

    def _save_pretrained(self, save_directory: Path) -> None:
        from .pretrained import save_loaded

        save_loaded(self, Path(save_directory))

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
