"""AVEL's sample codec: a sample's ``json`` -> its per-segment labels (int64 (segments,)).

Shard json (schema 'avel'): ``{id, key, category, labels[segments], split, start, end, quality, source}``;
``labels`` index the manifest's ``classes`` (background last).
"""

from __future__ import annotations

from typing import Any

import torch

from ...datasets.ave.release import NUM_SEGMENTS


class AVELCodec:
    """Checks and tensorises ``labels``; a malformed list is a ValueError (the stream skips the sample)."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def parse(self, meta: dict[str, Any], key: str) -> torch.Tensor:
        labels = meta.get("labels")
        if (not isinstance(labels, list) or len(labels) != NUM_SEGMENTS
                or not all(isinstance(x, int) and 0 <= x < self.num_classes for x in labels)):
            raise ValueError(f"labels {labels!r} are not {NUM_SEGMENTS} ints < {self.num_classes}")
        return torch.tensor(labels, dtype=torch.int64)

    @staticmethod
    def collate(targets: list[torch.Tensor]) -> dict[str, Any]:
        labels = torch.stack(targets) if targets else torch.empty(0, NUM_SEGMENTS, dtype=torch.int64)
        return {"labels": labels}
