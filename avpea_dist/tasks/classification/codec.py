"""Classification's sample codec: a clip's ``json`` -> its class indices, mapped through the manifest's classes.

Shard json (schema 'clips', written by ``datasets/vggsound`` and ``datasets/audioset``):
``{"id", "start", "end", "labels": [...]}``; ``labels`` are the release's own labels verbatim (VGGSound: the
label string; AudioSet: label ids such as "/m/09x0r"). The manifest lists the classes in index order
(``class_keys``). A label outside that list, an empty list on a single-label set, or several labels on a
single-label set is a ValueError: the stream skips the sample and counts it.
"""

from __future__ import annotations

from typing import Any

import torch

from ...errors import ConfigError


def class_keys(manifest: dict[str, Any]) -> list[str]:
    """The label each class index stands for (``manifest["classes"]``, in index order: AudioSet's label ids,
    VGGSound's label strings)."""
    classes = manifest.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise ConfigError("the shards' manifest lists no 'classes' (label strings in index order); rebuild the "
                          "shards with `avpea shards build vggsound` or `avpea shards build audioset`")
    if len(set(classes)) != len(classes):
        raise ConfigError("the shards' manifest lists a class twice; rebuild the shards")
    return list(classes)


def class_names(manifest: dict[str, Any]) -> list[str]:
    """Display names in class order: the manifest's ``class_names`` (AudioSet's display_name column), else
    the labels themselves."""
    keys, names = class_keys(manifest), manifest.get("class_names")
    if isinstance(names, list) and len(names) == len(keys):
        return [str(n) for n in names]
    return keys


class ClipLabelCodec:
    """``parse`` -> a multi-hot float32 (classes,) row (one 1 on a single-label set; none, on a multi-label
    set, for a clip whose labels list is empty: a clip of none of the classes); ``collate`` ->
    ``{"targets": (B, classes) float32}``. Plain attributes: it pickles into loader workers."""

    def __init__(self, keys: list[str], multilabel: bool) -> None:
        self.index = {k: i for i, k in enumerate(keys)}
        self.num_classes = len(keys)
        self.multilabel = multilabel

    def parse(self, meta: dict[str, Any], key: str) -> torch.Tensor:
        labels = meta.get("labels")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ValueError(f"labels {labels!r} are not a list of label strings")
        unknown = sorted({x for x in labels if x not in self.index})
        if unknown:
            raise ValueError(f"labels {unknown[:3]} are not classes of the shards' manifest")
        found = sorted({self.index[x] for x in labels})
        if not self.multilabel and len(found) != 1:
            raise ValueError(f"a single-label set needs exactly one label per clip, this one has {len(found)} "
                             f"({labels!r}); for multi-label shards set classification.multilabel=true")
        row = torch.zeros(self.num_classes, dtype=torch.float32)
        row[found] = 1.0
        return row

    def collate(self, targets: list[torch.Tensor]) -> dict[str, Any]:
        return {"targets": torch.stack(targets) if targets else torch.zeros(0, self.num_classes)}
