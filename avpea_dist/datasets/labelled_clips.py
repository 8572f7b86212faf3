"""Releases of labelled video segments (one sample per annotation row) -> a ``sharding.Release`` of schema 'clips'.

A dataset reader (``datasets/vggsound``, ``datasets/audioset``) turns its annotation files into ``Rows``: per
split, every annotation row in file order, either a ``Segment`` (a YouTube id, [start, end] s, its labels) or
a skip record already decided while reading (a mangled id, an unknown label). What both releases need beyond
that lives here: a repeated segment is kept once (a test row wins over a train row, so no segment is in both),
val is a seeded hold-out of train videos, each segment's video is found by a name pattern (``video_files.py``;
a missing one is skipped and counted: 10-20 % of AudioSet is gone from YouTube), and the manifest carries the
class list, per-split label counts and how much of the release was available. The schema is documented in
``datasets/audioset/__init__.py``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..data.manifest import FORMAT, VERSION, member_names
from ..data.options import BuildOptions
from ..data.parts import PARTS
from ..data.plan import Shard, fingerprint_inputs
from ..data.sample_build import safe_id
from ..data.sharding import Release
from ..data.video_files import VideoFolder, check_pattern, format_name, has_suffix

SCHEMA = "clips"
JSON_DOC = ("{id (YouTube id, verbatim), key (== the tar key), split, start, end (s, in the original video), "
            "labels: [class ids, verbatim, release order]}")
SPLIT_ORDER = ("train", "val", "test")


@dataclass(frozen=True)
class Segment:
    """One annotation row: a labelled segment of one video, and where the row is (for messages)."""

    id: str
    start: float
    end: float
    labels: tuple[str, ...]
    where: str


Entry = Union[Segment, dict]
"""A row as read: a ``Segment``, or its skip record ``{"id", "start", "reason"}``."""


@dataclass
class Rows:
    """A release read: the classes and, per split, every row in file order."""

    classes: list[str]
    class_names: list[str]
    multilabel: bool
    splits: dict[str, list[Entry]]
    annotations: dict[str, Any] = field(default_factory=dict)
    """What was read (files, rows per file, quirks met): goes into the manifest as it is."""


@dataclass(frozen=True)
class Clip:
    """One sample to write."""

    split: str
    index: int
    """The row's position among its split's rows: fixes the key."""
    id: str
    start: float
    end: float
    labels: tuple[str, ...]
    video: Any
    """A file path, or ``(path, start, end)`` for a segment cut from a whole video (``--full-videos``)."""

    @property
    def key(self) -> str:
        return f"{self.split}-{self.index:06d}-{safe_id(self.id)}"


_YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{11}")


def youtube_id_problem(video_id: str) -> str | None:
    """Why ``video_id`` is not a YouTube id (11 of [A-Za-z0-9_-]; it may start with '-' or hold '_'), or None."""
    if _YOUTUBE_ID.fullmatch(video_id):
        return None
    if video_id.startswith(("#", "=", "+")):
        return (f"id {video_id!r} is not a YouTube id: a spreadsheet turned the ids starting with '-' into "
                f"formulas; use the release's own csv file, not a copy saved by a spreadsheet")
    return f"id {video_id!r} is not a YouTube id (11 characters of A-Z a-z 0-9 _ -)"


def seconds(text: str) -> float | None:
    """A start/end column as a float, None when it is not a finite number >= 0."""
    try:
        x = float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) and x >= 0 else None


def skip(segment: Segment, reason: str) -> dict[str, Any]:
    return {"id": segment.id, "start": segment.start, "reason": reason}


def dedupe(splits: dict[str, list[Entry]]) -> dict[str, list[Entry]]:
    """A segment (id, start) met again is skipped: test rows are taken first, so a segment both in test and in
    train stays a test sample only; within a split the first row wins."""
    seen: dict[tuple[str, float], tuple[str, str]] = {}
    out = {split: list(entries) for split, entries in splits.items()}
    for split in sorted(out, key=lambda s: s != "test"):
        for i, e in enumerate(out[split]):
            if isinstance(e, Segment):
                first = seen.setdefault((e.id, round(e.start, 3)), (split, e.where))
                if first != (split, e.where):
                    out[split][i] = skip(e, f"repeated segment ({e.where}): already read at {first[1]} "
                                            f"(split '{first[0]}')")
    return out


def hold_out(splits: dict[str, list[Entry]], fraction: float, seed: int) -> tuple[dict[str, list[Entry]], dict]:
    """Move the rows of a seeded ``fraction`` of the train videos (all rows of a video together) to 'val'."""
    if not 0 <= fraction < 1:
        raise ValueError(f"--val-fraction={fraction} must lie in [0, 1)")
    rule = ("the rows of round(fraction * n) of the n train video ids (sorted, then permuted by "
            "numpy.random.default_rng(seed)) form val")
    record = {"from": "train", "fraction": fraction, "seed": seed, "rule": rule, "videos": 0}
    if "val" in splits or "train" not in splits or fraction == 0:
        record["videos"] = None if "val" in splits else 0
        return splits, record
    ids = sorted({e.id if isinstance(e, Segment) else e["id"] for e in splits["train"]})
    order = np.random.default_rng(seed).permutation(len(ids))
    val_ids = {ids[i] for i in order[:int(round(fraction * len(ids)))]}
    record["videos"] = len(val_ids)
    key = (lambda e: e.id if isinstance(e, Segment) else e["id"])
    out = {"train": [e for e in splits["train"] if key(e) not in val_ids],
           "val": [e for e in splits["train"] if key(e) in val_ids]}
    out.update({k: v for k, v in splits.items() if k != "train"})
    return {k: out[k] for k in sorted(out, key=lambda s: (SPLIT_ORDER + (s,)).index(s))}, record


class ClipsRelease(Release):
    """``Rows`` with their videos found: the samples per split, the rows skipped before decoding."""

    def __init__(self, rows: Rows, videos: str | Path, *, pattern: str, full_videos: bool, dataset: str,
                 source: str, val_fraction: float, seed: int, annotation_files: tuple[Path, ...] = ()) -> None:
        folder = VideoFolder(videos)
        check_pattern(pattern)
        splits, self.validation = hold_out(dedupe(rows.splits), val_fraction, seed)
        self.rows, self.dataset, self.annotation_files = rows, dataset, annotation_files
        self.entries: dict[str, dict[str, Any]] = {}
        self.index = {c: i for i, c in enumerate(rows.classes)}
        clips: dict[str, list[Clip]] = {}
        suffixed, claimed = has_suffix(pattern), {}
        for split, entries in splits.items():
            e = self.entries[split] = {"rows": len(entries), "skipped": [], "missing_videos": 0}
            clips[split] = []
            for index, row in enumerate(entries):
                if not isinstance(row, Segment):
                    e["skipped"].append(row)
                    continue
                try:
                    name = format_name(pattern, row.id, row.start, row.end)
                except ValueError as err:
                    e["skipped"].append(skip(row, str(err)))
                    continue
                path = folder.find(name, suffixed)
                if path is None:
                    e["missing_videos"] += 1
                    e["skipped"].append(skip(row, f"video not found: no {name} (any extension) under --videos"))
                    continue
                if not full_videos and claimed.setdefault(path, row.where) != row.where:
                    e["skipped"].append(skip(row, f"--video-pattern {pattern!r} names {path.name} also for the row "
                                                  f"at {claimed[path]}: one file cannot hold two segments (use a "
                                                  f"pattern with {{start}}, or --full-videos if files are whole "
                                                  f"videos)"))
                    continue
                video = (str(path), row.start, row.end) if full_videos else str(path)
                clips[split].append(Clip(split, index, row.id, row.start, row.end, row.labels, video))
        super().__init__(clips, source)
        self.full_videos, self.pattern = full_videos, pattern

    def fingerprint(self, plan: list[Shard], pre: dict[str, Any]) -> str:
        # Streamed (issue 25): the annotation files, the options, and which rows were left out before the plan
        # (missing videos...); the plan is a pure function of these, so it is not serialised to hash it.
        options = {"schema": SCHEMA, "dataset": self.dataset, "pre": pre, "classes": self.rows.classes,
                   "full_videos": self.full_videos, "pattern": self.pattern, "validation": self.validation,
                   "order_seed": self.validation["seed"], "shard_sizes": [len(s.clips) for s in plan]}
        skipped = ([split, e["rows"], skip] for split, e in self.entries.items() for skip in e["skipped"])
        return fingerprint_inputs(self.annotation_files, options, skipped)

    def record(self) -> dict[str, Any]:
        return {"label_counts": [0] * len(self.rows.classes)}

    def skipped(self, rec: dict[str, Any], sample: Clip, reason: str) -> None:
        rec["skipped"].append({"id": sample.id, "start": sample.start, "reason": f"undecodable video: {reason}"})

    def written(self, rec: dict[str, Any], sample: Clip) -> bytes:
        for label in sample.labels:
            rec["label_counts"][self.index[label]] += 1
        return json.dumps({"id": sample.id, "key": sample.key, "split": sample.split, "start": sample.start,
                           "end": sample.end, "labels": list(sample.labels)}).encode()

    def labels(self, sample: Clip) -> list[int]:
        return [self.index[label] for label in sample.labels]

    def identities(self, sample: Clip) -> list[dict[str, Any]]:
        # a segment is its video and its times (the rows' dedupe already keeps one of a repeated segment)
        return [{"id": sample.id, "start": sample.start, "end": sample.end}]

    def manifest(self, plan: list[Shard], done: dict[str, dict[str, Any]], opts: BuildOptions,
                 pre: dict[str, Any], fingerprint: str) -> dict[str, Any]:
        n = len(self.rows.classes)
        splits = {split: {"rows": e["rows"], "records": e["rows"], "order_seed": opts.order_seed, "samples": 0,
                          "missing_videos": e["missing_videos"], "undecodable": 0, "label_counts": [0] * n,
                          "shards": [], "skipped": list(e["skipped"])} for split, e in self.entries.items()}
        ordered = {}
        for shard in plan:
            rec = ordered[shard.name] = done[shard.name]
            s = splits[shard.split]
            s["skipped"] += rec["skipped"]
            s["undecodable"] += len(rec["skipped"])
            s["label_counts"] = [a + b for a, b in zip(s["label_counts"], rec["label_counts"])]
            if rec["file"] is not None:
                s["samples"] += rec["samples"]
                s["shards"].append({k: rec[k] for k in ("file", "sha256", "bytes", "samples")})
        for split, s in splits.items():
            if s["samples"] + len(s["skipped"]) != s["rows"]:  # only an edited build record can cause this
                raise ValueError(f"split '{split}': {s['samples']} samples + {len(s['skipped'])} skipped != "
                                 f"{s['rows']} rows; delete {PARTS}/ and manifest.json and rebuild")
            s["label_counts"] = dict(zip(self.rows.classes, s["label_counts"]))
        total = (lambda k: sum(s[k] for s in splits.values()))
        availability = {"rows": total("rows"), "written": total("samples"), "missing_videos": total("missing_videos"),
                        "undecodable": total("undecodable"),
                        "skipped_rows": total("rows") - total("samples") - total("missing_videos")
                        - total("undecodable")}
        availability["available_fraction"] = round(availability["written"] / max(1, availability["rows"]), 6)
        return {"format": FORMAT, "version": VERSION, "schema": SCHEMA, "dataset": self.dataset, "complete": True,
                "source": self.source, "preprocessing": pre, "members": member_names(JSON_DOC),
                "classes": self.rows.classes, "class_names": self.rows.class_names,
                "multilabel": self.rows.multilabel, "validation": self.validation,
                "annotations": {**self.rows.annotations, "video_pattern": self.pattern,
                                "full_videos": self.full_videos},
                "availability": availability, "shard_size": opts.shard_size, "splits": splits,
                "build": {"fingerprint": fingerprint, "done": ordered}}
