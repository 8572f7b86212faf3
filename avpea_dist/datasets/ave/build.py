"""`avpea shards build ave`: the AVE release layout (``release.py``) -> shards of schema 'avel', one sample per record.

Each annotation record is its own sample (its key, its labels), however many records share a video; a
zero-duration record is kept all-background with a note. The manifest has no ``schema`` (AVE's manifests
predate schemas and keep their bytes: readers take it as 'avel'), and adds ``classes`` (background last), per
split ``notes`` and a ``segment_histogram`` over the classes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ...data.builder import BuildOptions, DatasetBuilder
from ...data.manifest import FORMAT, VERSION, member_names
from ...data.parts import PARTS
from ...data.plan import Shard
from ...data.sharding import Release
from ...data.videos import video_paths
from .release import ANNOTATIONS, Clip, read_ave

ZERO_DURATION_NOTE = ("zero-duration event (StartTime = EndTime): kept with all segments background, "
                      "as AVE's label rule gives")
JSON_DOC = ("{id (video id), key (== the tar key, one per annotation record), category, labels[segments], "
            "split, start, end, quality, source}")


def fingerprint(classes: list[str], plan: list[Shard], preprocessing: dict[str, Any]) -> str:
    body = {"pre": preprocessing, "classes": classes,
            "plan": [[s.name, [asdict(c) for c in s.clips]] for s in plan]}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _meta(c: Clip, classes: list[str]) -> dict[str, Any]:
    return {"id": c.id, "key": c.key, "category": c.category, "labels": c.labels(classes), "split": c.split,
            "start": c.start, "end": c.end, "quality": c.quality, "source": f"AVE/{c.id}.mp4"}


def _split_entry(clips: list[Clip], order_seed: int, n_classes: int) -> dict[str, Any]:
    return {"records": len(clips), "order_seed": order_seed, "samples": 0, "shards": [], "skipped": [],
            "notes": [], "segment_histogram": [0] * n_classes}


class AveRelease(Release):
    """AVE's records: ``splits`` = {split: records in file order}; the videos are ``root/AVE/<id>.mp4`` (or
    another container, by the one rule of ``data/videos.py``)."""

    def __init__(self, root: Path) -> None:
        self.classes, splits = read_ave(root)
        super().__init__(splits, str(root.resolve()))
        self.root = root
        folder = root / "AVE"
        if not folder.is_dir():  # said once, not as a 'missing file' per record
            raise FileNotFoundError(f"{folder} is not a folder: the AVE root holds the videos in AVE/<VideoID>.mp4 "
                                    f"(the release's AVE/ folder); put them there or pass the right --root")
        self.paths = video_paths(folder, {c.id for clips in splits.values() for c in clips})

    def video(self, sample: Clip) -> str:
        return self.paths[sample.id]

    def identities(self, sample: Clip) -> list[dict[str, Any]]:
        return [{"id": sample.id, "category": sample.category, "start": sample.start, "end": sample.end}]

    def fingerprint(self, plan: list[Shard], pre: dict[str, Any]) -> str:
        return fingerprint(self.classes, plan, pre)

    def record(self) -> dict[str, Any]:
        return {"notes": [], "histogram": [0] * len(self.classes)}

    def skipped(self, rec: dict[str, Any], sample: Clip, reason: str) -> None:
        rec["skipped"].append({"id": sample.id, "key": sample.key, "reason": reason})

    def written(self, rec: dict[str, Any], sample: Clip) -> bytes:
        meta = _meta(sample, self.classes)
        if sample.zero_duration:
            rec["notes"].append({"id": sample.id, "key": sample.key, "note": ZERO_DURATION_NOTE})
        for label in meta["labels"]:
            rec["histogram"][label] += 1
        return json.dumps(meta).encode()

    def manifest(self, plan: list[Shard], done: dict[str, dict[str, Any]], opts: BuildOptions,
                 pre: dict[str, Any], fingerprint: str) -> dict[str, Any]:
        entries = {split: _split_entry(clips, opts.order_seed, len(self.classes))
                   for split, clips in self.splits.items()}
        ordered = {}
        for shard in plan:
            rec = ordered[shard.name] = done[shard.name]
            s = entries[shard.split]
            s["skipped"] += rec["skipped"]
            s["notes"] += rec["notes"]
            if rec["file"] is not None:
                s["samples"] += rec["samples"]
                s["shards"].append({k: rec[k] for k in ("file", "sha256", "bytes", "samples")})
                s["segment_histogram"] = [a + b for a, b in zip(s["segment_histogram"], rec["histogram"])]
        for split, s in entries.items():
            if s["samples"] + len(s["skipped"]) != s["records"]:  # cannot happen unless a record file was edited
                raise ValueError(f"split '{split}': {s['samples']} samples + {len(s['skipped'])} skipped != "
                                 f"{s['records']} records; delete the build records ({PARTS}/, manifest.json) "
                                 f"and rebuild")
        return {"format": FORMAT, "version": VERSION, "complete": True, "source": self.source,
                "preprocessing": pre, "members": member_names(JSON_DOC), "classes": self.classes,
                "shard_size": opts.shard_size, "splits": entries, "build": {"fingerprint": fingerprint, "done": ordered}}


class AveBuilder(DatasetBuilder):
    name = "ave"
    schema = "avel"
    unit = "records"
    defaults: dict[str, Any] = {"min_seconds": 8.0}  # AVE's clips are 10 s: shorter ones are truncated downloads

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--root", required=True, help=f"folder of the AVE release ({ANNOTATIONS}, "
                            "{train,val,test}Set.txt, AVE/<id>.mp4), or of `shards synth` output")

    def source(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"root": Path(args.root)}

    def release(self, out: Path, opts: BuildOptions, *, root: str | Path) -> AveRelease:
        return AveRelease(Path(root))


BUILDER = AveBuilder()


def build_ave(root: str | Path, out: str | Path, opts: BuildOptions = BuildOptions(),
              progress: bool = True) -> dict[str, Any]:
    """Build (or resume) all shards of the AVE-layout folder ``root`` into ``out`` in one task; -> the
    manifest, with an extra ``"stats"`` entry (not stored)."""
    return BUILDER.build(out, opts, progress=progress, root=root)
