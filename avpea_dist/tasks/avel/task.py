"""AVEL (audio-visual event localisation on AVE) as a task plug-in: a class per one-second segment.

Shards of schema 'avel' (``avpea shards build ave`` / ``avpea shards synth``); the head is LAVisH's
(``head.py``); the objective is ``avel.loss`` ('ce' or LAVisH's 'bce_softmax', ``loss.py``); the
selection metric is per-segment accuracy; the baseline is the training split's majority class.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import ConfigError
from ..base import EvalPart, Task, TaskLoss
from .codec import AVELCodec
from .head import AVELHead
from .loss import loss_for
from .metrics import majority_accuracy, segment_metrics, segment_sums


class AVELTask(Task):
    name = "avel"
    schema = "avel"
    selection_metric = "accuracy"
    metric_label = "accuracy"

    def __init__(self, cfg: Any, manifest: dict[str, Any] | None) -> None:
        super().__init__(cfg, manifest)
        if manifest is not None:
            classes = manifest["classes"]
            if cfg.avel.num_classes != len(classes):
                raise ConfigError(f"avel.num_classes={cfg.avel.num_classes} but the shards in '{cfg.data.shards}' "
                                  f"have {len(classes)} classes ({len(classes) - 1} events + background); set "
                                  f"avel.num_classes={len(classes)}")

    def codec(self, split: str, epoch: int) -> AVELCodec:
        return AVELCodec(self.cfg.avel.num_classes)

    def build_head(self, embed_dim: int, streams: tuple[str, ...]) -> nn.Module:
        return AVELHead(embed_dim * len(streams), self.cfg.avel.head_hidden, self.cfg.avel.num_classes)

    def loss(self, outputs: torch.Tensor, batch: dict[str, Any]) -> TaskLoss:
        labels = batch["labels"]
        fn = loss_for(self.cfg.avel.loss)
        return TaskLoss(fn(outputs, labels), (outputs.detach().argmax(-1) == labels).sum(), labels.numel())

    def eval_batch(self, model: nn.Module, batch: dict[str, Any], device: torch.device) -> EvalPart:
        modalities = self.cfg.model.modalities  # a stream the model lacks is not even copied to the device
        frames = batch["frames"].to(device) if modalities != "audio" else None
        audio = batch["audio"].to(device) if modalities != "visual" else None
        logits = model(frames, audio).float().cpu()
        return EvalPart(sums=segment_sums(logits, batch["labels"], self.cfg.avel.num_classes))

    def eval_reduce(self, split: str, sums: dict[str, torch.Tensor], rows: dict[str, torch.Tensor],
                    items: dict[str, list]) -> dict[str, Any]:
        return segment_metrics(sums)

    def signature(self) -> dict[str, Any]:
        """The head's sizes: a checkpoint or an export of this head fits no other."""
        return {"avel.num_classes": self.cfg.avel.num_classes, "avel.head_hidden": self.cfg.avel.head_hidden}

    def baselines(self, split: str) -> dict[str, Any]:
        hist = self.label_histogram("train"), self.label_histogram(split)
        if hist[0] is None or hist[1] is None:
            return {}
        return {"accuracy": majority_accuracy(*hist)}  # the majority class

    @classmethod
    def example_manifest(cls, cfg: Any, folder: Any) -> dict[str, Any]:
        n = cfg.avel.num_classes
        return {"schema": "avel", "classes": [f"event {k}" for k in range(n - 1)] + ["background"], "splits": {}}

    def example_meta(self, index: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(index)
        labels = torch.randint(0, self.cfg.avel.num_classes, (10,), generator=g).tolist()
        return {"id": f"example{index}", "labels": labels, "split": "train"}

    def label_histogram(self, split: str) -> list[int] | None:
        hist = ((self.manifest or {}).get("splits", {}).get(split) or {}).get("segment_histogram")
        return list(hist) if hist else None
