"""Clip classification (VGGSound single-label, AudioSet multi-label) as a task plug-in.

Shards of schema 'clips' (``avpea shards build vggsound`` / ``audioset``); the codec maps a clip's labels to
class indices through the manifest (``codec.py``); the head classifies the clip from its pooled audio and
visual CLS tokens (``head.py``); the objective is softmax cross-entropy (single-label) or per-class binary
cross-entropy (multi-label, ``loss.py``). Evaluation gathers every clip's class scores and targets as rows and
computes top-1/top-5, mAP, mean AUC and d' over the whole split (``metrics.py``).

Selection: the metric ``score`` is val top-1 accuracy on a single-label set and val mAP on a multi-label one.
One fixed name for both because a sweep asks the task class for its metric before any config is read
(``launch/sweep_points.py``); ``metric_label`` says which it is in the run's messages. The baseline is the
class prior of the training split as a constant scorer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError
from ..base import EvalPart, Task, TaskLoss, to_device
from .codec import ClipLabelCodec, class_keys, class_names
from .head import ClipHead
from .loss import clip_loss
from .metrics import clip_metrics, prior_baseline


class ClassificationTask(Task):
    name = "classification"
    schema = "clips"
    selection_metric = "score"
    metric_label = "score (top-1 accuracy, or mAP when multi-label)"

    def __init__(self, cfg: Any, manifest: dict[str, Any] | None) -> None:
        super().__init__(cfg, manifest)
        c = self.ccfg = cfg.classification
        self.metric_label = "mAP" if c.multilabel else "top-1 accuracy"
        self.keys: list[str] | None = None
        self.names = [f"class {k}" for k in range(c.num_classes)]
        if manifest is None:
            return
        self.keys, self.names = class_keys(manifest), class_names(manifest)
        if c.num_classes != len(self.keys):
            raise ConfigError(f"classification.num_classes={c.num_classes} but the shards in '{cfg.data.shards}' "
                              f"have {len(self.keys)} classes; set classification.num_classes={len(self.keys)}")
        multilabel = manifest.get("multilabel")
        if not isinstance(multilabel, bool):
            raise ConfigError(f"the shards' manifest in '{cfg.data.shards}' does not say whether its clips are "
                              f"multi-label ('multilabel': true/false); rebuild them with `avpea shards build`")
        if multilabel != c.multilabel:
            raise ConfigError(f"classification.multilabel={str(c.multilabel).lower()} but the shards in "
                              f"'{cfg.data.shards}' are {'multi' if multilabel else 'single'}-label; set "
                              f"classification.multilabel={str(multilabel).lower()}")

    def codec(self, split: str, epoch: int) -> ClipLabelCodec:
        if self.keys is None:
            raise ConfigError("task 'classification' maps labels through the shards' manifest, and this run has "
                              "none; set data.shards to the shards the model was trained on")
        return ClipLabelCodec(self.keys, self.ccfg.multilabel)

    def build_head(self, embed_dim: int, streams: tuple[str, ...]) -> nn.Module:
        c = self.ccfg
        return ClipHead(embed_dim * len(streams), c.num_classes, c.head_hidden, c.pooling, c.dropout)

    def signature(self) -> dict[str, Any]:
        """The head's sizes and the meaning of its outputs: a checkpoint fits no other."""
        return {f"classification.{k}": getattr(self.ccfg, k) for k in ("num_classes", "multilabel", "head_hidden",
                                                                         "pooling")}

    def loss(self, outputs: torch.Tensor, batch: dict[str, Any]) -> TaskLoss:
        """``correct``: clips whose highest-scored class is one of theirs (no host sync: a tensor)."""
        targets = batch["targets"]
        hits = targets.gather(1, outputs.detach().argmax(1, keepdim=True)) > 0
        return TaskLoss(clip_loss(outputs, targets, self.ccfg.multilabel), hits.sum(), int(targets.shape[0]))

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> class scores comparable across clips: sigmoid per class (multi-label) or softmax."""
        return logits.sigmoid() if self.ccfg.multilabel else logits.softmax(-1)

    def eval_batch(self, model: nn.Module, batch: dict[str, Any], device: torch.device) -> EvalPart:
        logits = model(to_device(batch, device, model.streams)).float().cpu()
        targets = batch["targets"]
        return EvalPart(sums={"loss": clip_loss(logits, targets, self.ccfg.multilabel, reduction="sum")},
                        rows={"scores": self.scores(logits), "targets": (targets > 0).to(torch.uint8)})

    def eval_reduce(self, split: str, sums: dict[str, torch.Tensor], rows: dict[str, torch.Tensor],
                    items: dict[str, list]) -> dict[str, Any]:
        m = clip_metrics(rows["scores"], rows["targets"], self.names)
        m["loss"] = sums["loss"].item() / m["clips"]
        m["score"] = m["map"] if self.ccfg.multilabel else m["top1"]
        return m

    def baselines(self, split: str) -> dict[str, Any]:
        """The class prior of the training split as a constant scorer on ``split`` (from the manifest's label
        counts; {} when it has none). Its ``score`` follows the selection rule."""
        train, other = self.label_counts("train"), self.label_counts(split)
        clips = ((self.manifest or {}).get("splits", {}).get(split) or {}).get("samples")
        if train is None or other is None or not clips:
            return {}
        b = prior_baseline(train, other, int(clips), self.ccfg.multilabel)
        return {**b, "score": b["map"] if self.ccfg.multilabel else b["top1"]}

    def label_counts(self, split: str) -> list[int] | None:
        """Positives per class in ``split``, in class order, from the manifest's ``{label: count}``; None when
        the manifest has none."""
        counts = ((self.manifest or {}).get("splits", {}).get(split) or {}).get("label_counts")
        if counts is None or self.keys is None:
            return None
        if not isinstance(counts, dict):
            raise ConfigError(f"the shards' manifest gives split {split!r} label_counts that are not a "
                              f"{{label: count}} object; rebuild the shards")
        return [int(counts.get(k, 0)) for k in self.keys]

    # -- examples (the shipped-config test: no shards) ---------------------------------------------

    @classmethod
    def example_manifest(cls, cfg: Any, folder: Path) -> dict[str, Any]:
        """Classes named like the configured release's (AudioSet-style ids on a multi-label config)."""
        c = cfg.classification
        ids = [f"/m/ex{k:03d}" if c.multilabel else f"example class, {k}" for k in range(c.num_classes)]
        return {"schema": "clips", "classes": ids, "class_names": [f"example sound {k}" for k in range(c.num_classes)],
                "multilabel": c.multilabel, "splits": {}}

    def example_meta(self, index: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(index)
        keys = self.keys or []
        n = int(torch.randint(1, 4, (1,), generator=g)) if self.ccfg.multilabel else 1
        picked = torch.randperm(len(keys), generator=g)[:n].tolist()
        return {"id": f"exAmple-{index:04d}", "start": 30.0, "end": 40.0, "labels": [keys[k] for k in picked]}
