"""A task plug-in written in a test, registered at run time (``SPEC``, added to the plug-in registry by the
test's fixture): it must train and evaluate without any trainer edit.

Toy problem on AVEL-schema shards: per clip, is the first segment's label odd? Its head mean-pools each
stream's CLS tokens over the segments; its selection metric is named 'score' (not 'accuracy'), and its
evaluation returns a nested table besides the scalars.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from avpea_dist.data.features import npy_bytes
from avpea_dist.data.tario import TarShardWriter
from avpea_dist.fileio import sha256_file
from avpea_dist.plugins import TaskSpec
from avpea_dist.tasks.base import EvalPart, Task, TaskLoss, to_device


class ToyCodec:
    def parse(self, meta: dict[str, Any], key: str) -> int:
        labels = meta.get("labels")
        if not isinstance(labels, list) or not labels or not isinstance(labels[0], int):
            raise ValueError(f"no usable labels in {sorted(meta)}")
        return labels[0] % 2

    def collate(self, targets: list[int]) -> dict[str, Any]:
        return {"odd": torch.tensor(targets, dtype=torch.int64)}


class ToyHead(nn.Module):
    """Substitutes zeros for a stream the ablation removed."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(2 * dim, 2)

    def forward(self, enc: Any, batch: dict[str, Any]) -> torch.Tensor:
        pooled = [enc.cls(s).mean(1) if s in enc.streams else None for s in ("a", "v")]
        ref = next(p for p in pooled if p is not None)
        x = torch.cat([p if p is not None else torch.zeros_like(ref) for p in pooled], dim=-1)
        return self.fc(x.to(self.fc.weight.dtype)).float()


class ToyTask(Task):
    name = "toy"
    schema = "avel"
    selection_metric = "score"
    metric_label = "toy score"

    def codec(self, split: str, epoch: int) -> ToyCodec:
        return ToyCodec()

    def build_head(self, embed_dim: int, streams: tuple[str, ...]) -> nn.Module:
        return ToyHead(embed_dim)

    def loss(self, outputs: torch.Tensor, batch: dict[str, Any]) -> TaskLoss:
        target = batch["odd"]
        return TaskLoss(nn.functional.cross_entropy(outputs, target), (outputs.argmax(-1) == target).sum(),
                        target.numel())

    def eval_batch(self, model: nn.Module, batch: dict[str, Any], device: torch.device) -> EvalPart:
        out = model(to_device(batch, device, model.streams)).cpu()
        return EvalPart(sums={"right": (out.argmax(-1) == batch["odd"]).sum(), "clips": torch.tensor(len(batch["key"]))})

    def eval_reduce(self, split: str, sums: dict[str, torch.Tensor], rows: dict[str, torch.Tensor],
                    items: dict[str, list]) -> dict[str, Any]:
        right, clips = int(sums["right"]), int(sums["clips"])
        return {"score": right / clips, "table": {"right": right, "clips": clips}}

    def example_meta(self, index: int) -> dict[str, Any]:
        return {"id": f"toy{index}", "labels": [index % 3] * 10}


SPEC = TaskSpec(name="toy", task="toytask:ToyTask", schema="avel")


def write_shards(root: Path, splits: dict[str, int], *, schema: str | None = None, frame_size: int = 16,
                 classes: int = 3) -> Path:
    """A real shard folder (tar shards, JPEG frames, float16 fbank, json) of ``splits`` = {split: samples}."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (frame_size, frame_size, 3), dtype=np.uint8)).save(buf, format="JPEG")
    jpeg = buf.getvalue()
    manifest: dict[str, Any] = {"format": "avpea-shards", "version": 1, "complete": True, "source": "test",
                                "preprocessing": {"frame_size": frame_size}, "splits": {}}
    if schema is not None:
        manifest["schema"] = schema
    if schema in (None, "avel"):
        manifest["classes"] = [f"c{i}" for i in range(classes - 1)] + ["background"]
    for split, n in splits.items():
        name = f"{split}-000000.tar"
        with open(root / name, "wb") as f:
            w = TarShardWriter(f)
            for i in range(n):
                key = f"{split}-{i:05d}-clip{i}"
                fbank = rng.standard_normal((10, 128, 102)).astype(np.float16)
                members = {f"f{s}.jpg": jpeg for s in range(10)}
                meta = {"id": f"clip{i}", "key": key, "labels": [i % classes] * 10}
                members.update({"fbank.npy": npy_bytes(fbank), "json": json.dumps(meta).encode()})
                w.write(key, members)
            w.close()
        manifest["splits"][split] = {"samples": n, "records": n, "skipped": [], "order_seed": 0, "shards": [
            {"file": name, "sha256": sha256_file(root / name), "bytes": (root / name).stat().st_size, "samples": n}]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root
