"""A training split of tiny stand-in samples (json members only) with chosen classes, for tests of the
training stream's plan (coverage, class mixing, bytes read) that need many samples but no decoding."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

from avpea_dist.datasets.ave.release import BACKGROUND
from avpea_dist.data.tario import TarShardWriter
from avpea_dist.fileio import sha256_file


def write_split(root: Path, classes: list[int], shard_size: int, pad: int = 0) -> dict[str, int]:
    """Shards of ``shard_size`` samples with the given classes, in this order (``pad`` extra bytes per sample);
    returns key -> class."""
    root.mkdir(parents=True)
    keys = {f"s{i:05d}": c for i, c in enumerate(classes)}
    items = list(keys.items())
    shards = []
    for n, lo in enumerate(range(0, len(items), shard_size)):
        name = f"train-{n:06d}.tar"
        with open(root / name, "wb") as f:
            w = TarShardWriter(f)
            for key, c in items[lo:lo + shard_size]:
                w.write(key, {"json": json.dumps({"id": key, "labels": [c] * 10}).encode(), "pad": bytes(pad)})
            w.close()
        shards.append({"file": name, "sha256": sha256_file(root / name), "bytes": (root / name).stat().st_size,
                       "samples": len(items[lo:lo + shard_size])})
    manifest = {"format": "avpea-shards", "version": 1, "complete": True, "source": "test",
                "classes": [f"c{i}" for i in range(max(classes) + 1)] + [BACKGROUND],
                "preprocessing": {"frame_size": 16}, "splits": {"train": {"samples": len(items), "shards": shards,
                                                                           "skipped": []}}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return keys


def expected_classes_per_batch(classes: list[int], batch: int) -> float:
    """Mean distinct classes in a batch drawn at random without replacement (exact)."""
    n = len(classes)
    return sum(1 - comb(n - classes.count(c), batch) / comb(n, batch) for c in set(classes))
