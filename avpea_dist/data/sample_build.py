"""Releases read as items (id, video, json meta, the records it holds) -> a ``sharding.Release``.

A dataset's builder (``datasets/musicavqa/build.py``, ``datasets/valor/build.py``) reads its release into
``SplitItems``: per split, the number of release records, one ``Item`` per sample to write (a video and the
json fields of the records it holds) and the records already skipped while reading, with their reasons.
``ItemsRelease`` records them for the shared build (``sharding.py``): a video that cannot be decoded is
skipped with its reason once per record it held; the manifest counts the records written per split under the
schema's ``unit`` and adds what the dataset's ``summary`` derives from the items written.

Keys are ``<split>-<5-digit index of the item in its split>-<id made webdataset-safe>``: unique, the same in
every rebuild; the ``json`` member keeps the id verbatim.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .options import BuildOptions
from .manifest import FORMAT, MANIFEST, VERSION, member_names
from .parts import PARTS
from .plan import Shard
from .sharding import Release

ANY_LENGTH = BuildOptions(sampling="even", min_seconds=1.0)
"""The builders' default options: segments spread over videos of any length, clips from 1 s (VALOR has 2 s ones)."""
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def safe_id(video_id: str) -> str:
    """The id as it may appear in a tar key: every character outside [A-Za-z0-9_-] becomes '_' (webdataset
    cuts member names at their first dot; slashes would make folders)."""
    return _UNSAFE.sub("_", video_id)


@dataclass(frozen=True)
class Item:
    """One sample to write: one video of one split and the json fields of the release records it holds."""

    split: str
    index: int
    """Position of the item among its split's items (file order of the video's first record): fixes the key."""
    id: str
    """The video id, verbatim."""
    video: str
    """Path of the video file."""
    meta: dict[str, Any]
    """The schema's json fields beside ``id``, ``key`` and ``split`` (e.g. ``questions`` or ``captions``)."""
    records: tuple[dict[str, Any], ...]
    """One manifest ``skipped`` entry (without its reason) per release record this sample holds: what is
    recorded, once per record, when the video cannot be decoded."""

    @property
    def key(self) -> str:
        return f"{self.split}-{self.index:05d}-{safe_id(self.id)}"

    def json_bytes(self) -> bytes:
        return json.dumps({"id": self.id, "key": self.key, "split": self.split, **self.meta}).encode()


@dataclass(frozen=True)
class SplitItems:
    """A split as the release gives it: ``records`` == records written (in items) + ``skipped``."""

    records: int
    items: list[Item]
    skipped: list[dict[str, Any]] = field(default_factory=list)
    """Records dropped while reading the release, each with its ``reason``."""


@dataclass(frozen=True)
class Schema:
    """What a task's shards hold beyond the media: named in the manifest, checked when it is written."""

    name: str
    """Manifest ``schema``: 'avqa' or 'captions'."""
    unit: str
    """What a release record becomes in a sample, counted per split: 'questions' or 'captions'."""
    json_doc: str
    """The ``members.json`` description."""


Summary = Callable[[dict[str, list[Item]], dict[str, list[dict[str, Any]]]],
                   tuple[dict[str, Any], dict[str, dict[str, Any]]]]
"""(written items per split, skipped records per split) -> (top-level manifest fields, {split: extra split
fields}); the skipped records let a summary that cannot be made say why (``skip_digest``)."""
_VIDEO_PREFIX = re.compile(r"^video [^:]*: ")


def skip_digest(skipped: list[dict[str, Any]], shown: int = 4) -> str:
    """Skip reasons counted by kind, most frequent first: "9 missing file, 2 too short, ..."."""
    kinds: dict[str, int] = {}
    for entry in skipped:
        reason = _VIDEO_PREFIX.sub("", str(entry.get("reason", "")))
        kind = reason.split(": ", 1)[0][:60]
        kinds[kind] = kinds.get(kind, 0) + 1
    ranked = sorted(kinds.items(), key=lambda kv: -kv[1])
    more = f", {sum(n for _, n in ranked[shown:])} other" if len(ranked) > shown else ""
    return ", ".join(f"{n} {kind}" for kind, n in ranked[:shown]) + more


def _without_video(item: Item) -> dict[str, Any]:
    """An item as the fingerprint sees it: which file holds its video is checked per shard by its stamps
    (a video found as <id>.webm after <id>.mp4 was missing rebuilds the shards holding it, not the folder)."""
    return {k: v for k, v in asdict(item).items() if k != "video"}


class ItemsRelease(Release):
    """A release read into ``SplitItems``: one sample per item (a video and the records it holds); a video
    that cannot be decoded skips every record of its item."""

    def __init__(self, splits: dict[str, SplitItems], *, schema: Schema, source: str, summary: Summary,
                 identity: Callable[[Item], list[dict[str, Any]]] | None = None) -> None:
        super().__init__({split: s.items for split, s in splits.items()}, source)
        self.items, self.schema, self.summary = splits, schema, summary
        self.identity = identity or (lambda item: [dict(r) for r in item.records])

    def fingerprint(self, plan: list[Shard], pre: dict[str, Any]) -> str:
        body = {"schema": self.schema.name, "pre": pre,
                "records": {k: [s.records, s.skipped] for k, s in self.items.items()},
                "plan": [[s.name, [_without_video(i) for i in s.clips]] for s in plan]}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def record(self) -> dict[str, Any]:
        return {"written": []}

    def skipped(self, rec: dict[str, Any], sample: Item, reason: str) -> None:
        rec["skipped"] += [{**r, "reason": f"video {Path(sample.video).name}: {reason}"} for r in sample.records]

    def written(self, rec: dict[str, Any], sample: Item) -> bytes:
        rec["written"].append(sample.key)
        return sample.json_bytes()

    def identities(self, sample: Item) -> list[dict[str, Any]]:
        return self.identity(sample)

    def manifest(self, plan: list[Shard], done: dict[str, dict[str, Any]], opts: BuildOptions,
                 pre: dict[str, Any], fingerprint: str) -> dict[str, Any]:
        return _manifest(self.schema, self.items, plan, done, opts, pre, self.source, fingerprint, self.summary)


def _manifest(schema: Schema, splits: dict[str, SplitItems], plan: list[Shard], done: dict[str, dict],
              opts: BuildOptions, pre: dict[str, Any], source: str, fp: str, summary: Summary) -> dict[str, Any]:
    by_key = {i.key: i for s in splits.values() for i in s.items}
    entries = {split: {"records": s.records, "order_seed": opts.order_seed, "samples": 0, schema.unit: 0,
                       "shards": [], "skipped": list(s.skipped)} for split, s in splits.items()}
    written: dict[str, list[Item]] = {split: [] for split in splits}
    ordered = {}
    for shard in plan:
        rec = ordered[shard.name] = done[shard.name]
        e = entries[shard.split]
        e["skipped"] += rec["skipped"]
        written[shard.split] += [by_key[k] for k in rec["written"]]
        if rec["file"] is not None:
            e["samples"] += rec["samples"]
            e["shards"].append({k: rec[k] for k in ("file", "sha256", "bytes", "samples")})
    top, extra = summary({split: sorted(items, key=lambda i: i.index) for split, items in written.items()},
                         {split: e["skipped"] for split, e in entries.items()})
    for split, e in entries.items():
        e[schema.unit] = sum(len(i.records) for i in written[split])
        e.update(extra.get(split, {}))
        if e[schema.unit] + len(e["skipped"]) != e["records"]:  # only an edited build record can cause this
            raise ValueError(f"split '{split}': {e[schema.unit]} {schema.unit} written + {len(e['skipped'])} "
                             f"skipped != {e['records']} records; delete {PARTS}/ and {MANIFEST} and rebuild")
    members = member_names(schema.json_doc)
    return {"format": FORMAT, "version": VERSION, "schema": schema.name, "complete": True, "source": source,
            "preprocessing": pre, "members": members, "shard_size": opts.shard_size, **top, "splits": entries,
            "build": {"fingerprint": fp, "done": ordered}}
