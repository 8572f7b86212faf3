"""A release of tiny labelled records whose "decoding" is a fixed member set: the build's bookkeeping (plan,
progress records, manifest, index) exercised in milliseconds, without videos."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from avpea_dist.data import sharding
from avpea_dist.data.builder import BuildOptions
from avpea_dist.data.manifest import FORMAT, VERSION
from avpea_dist.data.plan import Shard, fingerprint_inputs
from avpea_dist.data.sharding import Release

PAYLOAD = {"f0.jpg": b"\xff\xd8 tiny", "fbank.npy": b"\x93NUMPY tiny"}
CLASSES = [f"c{i}" for i in range(5)]


@dataclass(frozen=True)
class Toy:
    key: str
    video: str
    labels: tuple[int, ...]


class ToyRelease(Release):
    """``sizes`` records per split; record i of a split has labels ``{i % 5} | {0 if i % 3 == 0}``; a record
    whose index is in ``bad`` has an undecodable video."""

    def __init__(self, sizes: dict[str, int], bad: tuple[int, ...] = (), videos: str = "/nonexistent") -> None:
        splits = {split: [Toy(f"{split}-{i:07d}", f"{videos}/{'bad' if i in bad else 'ok'}-{split}-{i}.mp4",
                              tuple(sorted({i % 5} | ({0} if i % 3 == 0 else set()))))
                          for i in range(n)] for split, n in sizes.items()}
        super().__init__(splits, "toy")
        self.sizes = sizes

    def fingerprint(self, plan: list[Shard], pre: dict[str, Any]) -> str:
        return fingerprint_inputs([], {"sizes": self.sizes, "pre": pre, "shards": len(plan)})

    def skipped(self, rec: dict[str, Any], sample: Toy, reason: str) -> None:
        rec["skipped"].append({"key": sample.key, "reason": reason})

    def written(self, rec: dict[str, Any], sample: Toy) -> bytes:
        return json.dumps({"id": sample.key, "key": sample.key, "labels": list(sample.labels)}).encode()

    def labels(self, sample: Toy) -> list[int]:
        return list(sample.labels)

    def identities(self, sample: Toy) -> list[dict[str, Any]]:
        return [{"key": sample.key}]

    def manifest(self, plan: list[Shard], done: dict[str, dict[str, Any]], opts: BuildOptions,
                 pre: dict[str, Any], fingerprint: str) -> dict[str, Any]:
        splits = {split: {"records": n, "samples": 0, "shards": [], "skipped": []} for split, n in self.sizes.items()}
        for shard in plan:
            rec, s = done[shard.name], splits[shard.split]
            s["skipped"] += rec["skipped"]
            if rec["file"] is not None:
                s["samples"] += rec["samples"]
                s["shards"].append({k: rec[k] for k in ("file", "sha256", "bytes", "samples")})
        return {"format": FORMAT, "version": VERSION, "schema": "clips", "complete": True, "source": self.source,
                "preprocessing": pre, "classes": CLASSES, "shard_size": opts.shard_size, "splits": splits,
                "build": {"fingerprint": fingerprint, "done": {s.name: done[s.name] for s in plan}}}


def fake_results(paths: list[str], opts: BuildOptions) -> Iterator[tuple[str, Any]]:
    """Decoding replaced: a fixed tiny sample per video, a skip for one named 'bad-...'."""
    for path in paths:
        yield ("skip", "undecodable: test") if Path(path).name.startswith("bad-") else ("ok", dict(PAYLOAD))


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sharding, "ordered_results", fake_results)


def build(out: Path, release: ToyRelease, shard_size: int = 3, **kw: Any) -> dict[str, Any]:
    return sharding.build_task(out, release, BuildOptions(shard_size=shard_size), progress=False, **kw)
