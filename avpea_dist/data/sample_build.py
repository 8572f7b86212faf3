"""Write samples of the shared media format for any release: items (id, video, json meta) -> shards.

A task's builder (``tasks/avqa/build.py``, ``tasks/valor/build.py``) reads its release into ``SplitItems``:
per split, the number of release records, one ``Item`` per sample to write (a video and the json fields of
the records it holds) and the records already skipped while reading, with their reasons. This module does
the rest as ``build.py`` does for AVE, with its pieces: items shuffled per split with a seed and cut into
shards of ``shard_size`` samples, every video decoded once by ``encode_video`` in a pool of worker
processes (also when samples of several splits share it), each shard written atomically with its sha256,
bytes and sample count, a part record after each shard (``parts.py``) so that a rerun resumes at the first
unfinished shard, and a video that cannot be decoded skipped with its reason, once per record it held.
``manifest.json`` is written last, atomically.

Keys are ``<split>-<5-digit index of the item in its split>-<id made webdataset-safe>``: unique, the same in
every rebuild; the ``json`` member keeps the id verbatim.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..fileio import atomic_open, atomic_write_json, sha256_file
from .build import BuildOptions, ordered_results, preprocessing
from .manifest import FORMAT, MANIFEST, VERSION, member_names
from .parts import PARTS, intact, load_done, mark_unfinished, write_part
from .plan import Shard, shuffled
from .tario import TarShardWriter

ANY_LENGTH = BuildOptions(sampling="even", min_seconds=1.0)
"""The builders' default options: segments spread over videos of any length, clips from 1 s (VALOR has 2 s ones)."""
CACHE = ".decoded"
"""Under the shard folder: decoded videos waiting for a later split's sample (removed when the build ends)."""
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")
"""Looked for in this order: the releases ship mp4; a download tool may have left another container."""
_SUFFIX_RANK = {suffix: rank for rank, suffix in enumerate(VIDEO_SUFFIXES)}


def video_paths(folder: str | Path, ids: Iterable[str]) -> dict[str, str]:
    """{id: its video file in ``folder``}: ``<id>.mp4``, else ``<id>`` with another suffix of
    ``VIDEO_SUFFIXES``; an id without any gets its ``.mp4`` path (then skipped as a missing file)."""
    folder = Path(folder)
    best: dict[str, tuple[int, str]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, _, suffix = entry.name.rpartition(".")
            rank = _SUFFIX_RANK.get(f".{suffix.lower()}")
            if stem and rank is not None and (stem not in best or rank < best[stem][0]):
                best[stem] = (rank, entry.name)
    return {i: str(folder / (best[i][1] if i in best else f"{i}.mp4")) for i in ids}


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


Summary = Callable[[dict[str, list[Item]]], tuple[dict[str, Any], dict[str, dict[str, Any]]]]
"""written items per split -> (top-level manifest fields, {split: extra split fields})."""


def _plan(splits: dict[str, SplitItems], shard_size: int, order_seed: int) -> list[Shard]:
    plan = []
    for split, s in splits.items():
        order = shuffled(s.items, split, order_seed)
        plan += [Shard(split, f"{split}-{i // shard_size:06d}", tuple(order[i:i + shard_size]))
                 for i in range(0, len(order), shard_size)]
    return plan


def _fingerprint(schema: Schema, splits: dict[str, SplitItems], plan: list[Shard], pre: dict[str, Any]) -> str:
    body = {"schema": schema.name, "pre": pre, "records": {k: [s.records, s.skipped] for k, s in splits.items()},
            "plan": [[s.name, [asdict(i) for i in s.clips]] for s in plan]}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


class _Decoded:
    """Each video decoded once, however many samples use it (MUSIC-AVQA puts one video in several splits):
    a result still needed later waits on disk (``out/.decoded/``, one small tar each, removed at its last
    use): holding it in memory from the train shards to the test shards could hold thousands of clips."""

    def __init__(self, out: Path, paths: list[str], opts: BuildOptions) -> None:
        self.uses = Counter(paths)
        unique = list(dict.fromkeys(paths))  # first-use order, the order they are taken in
        self.results = ordered_results(unique, opts) if unique else iter(())
        self.decoded = len(unique)
        self.cache = out / CACHE
        shutil.rmtree(self.cache, ignore_errors=True)  # a killed build's leftovers
        self.kept: dict[str, Path] = {}
        self.stored = 0

    def take(self, path: str) -> tuple[str, Any]:
        self.uses[path] -= 1
        if path in self.kept:
            result = _read_result(self.kept[path])
            if not self.uses[path]:
                self.kept.pop(path).unlink()
            return result
        result = next(self.results)
        if self.uses[path]:
            self.kept[path] = self.cache / f"{self.stored:06d}.tar"
            self.stored += 1
            _write_result(self.kept[path], result)
        return result

    def close(self) -> None:
        """Stop the decoding pool now (also after an error) and remove the waiting results."""
        close = getattr(self.results, "close", None)
        if close is not None:
            close()
        shutil.rmtree(self.cache, ignore_errors=True)


def _write_result(path: Path, result: tuple[str, Any]) -> None:
    status, payload = result
    with atomic_open(path, "wb") as f:
        writer = TarShardWriter(f)
        writer.write("r", payload if status == "ok" else {"skip": str(payload).encode()})
        writer.close()


def _read_result(path: Path) -> tuple[str, Any]:
    with tarfile.open(path) as tar:
        members = {m.name[2:]: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    return ("skip", members["skip"].decode()) if "skip" in members else ("ok", members)


def _write_shard(out: Path, shard: Shard, videos: _Decoded, tick: Callable[[], None]) -> dict:
    rec: dict[str, Any] = {"file": None, "sha256": None, "bytes": 0, "samples": 0, "skipped": [], "written": []}
    path = out / f"{shard.name}.tar"
    with atomic_open(path, "wb") as f:
        writer = TarShardWriter(f)
        for item in shard.clips:
            status, payload = videos.take(item.video)
            tick()
            if status == "skip":
                rec["skipped"] += [{**r, "reason": f"video {Path(item.video).name}: {payload}"} for r in item.records]
                continue
            writer.write(item.key, {**payload, "json": item.json_bytes()})
            rec["written"].append(item.key)
        writer.close()
    if writer.samples:
        rec.update(file=path.name, sha256=sha256_file(path), bytes=path.stat().st_size, samples=writer.samples)
    else:
        path.unlink()  # every video of this shard was skipped: no empty tar
    return rec


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
    top, extra = summary({split: sorted(items, key=lambda i: i.index) for split, items in written.items()})
    for split, e in entries.items():
        e[schema.unit] = sum(len(i.records) for i in written[split])
        e.update(extra.get(split, {}))
        if e[schema.unit] + len(e["skipped"]) != e["records"]:  # only an edited build record can cause this
            raise ValueError(f"split '{split}': {e[schema.unit]} {schema.unit} written + {len(e['skipped'])} "
                             f"skipped != {e['records']} records; delete {PARTS}/ and {MANIFEST} and rebuild")
    members = {**member_names(), "json": schema.json_doc}
    return {"format": FORMAT, "version": VERSION, "schema": schema.name, "complete": True, "source": source,
            "preprocessing": pre, "members": members, "shard_size": opts.shard_size, **top, "splits": entries,
            "build": {"fingerprint": fp, "done": ordered}}


def build_samples(out: str | Path, splits: dict[str, SplitItems], opts: BuildOptions, *, schema: Schema,
                  source: str, summary: Summary, progress: bool = True) -> dict[str, Any]:
    """Build (or resume) the shards of ``splits`` in ``out``; -> the manifest written, with an extra
    ``"stats"`` entry (not stored). ``summary`` adds the schema's fields from the items written."""
    from tqdm import tqdm

    out = Path(out)
    pre = preprocessing(opts)
    plan = _plan(splits, opts.shard_size, opts.order_seed)
    fp = _fingerprint(schema, splits, plan, pre)
    out.mkdir(parents=True, exist_ok=True)
    previous = load_done(out, fp)
    done = {s.name: previous[s.name] for s in plan if s.name in previous and intact(out, previous[s.name])}
    todo = [s for s in plan if s.name not in done]
    write_part(out, 0, 1, fp, done, run=None, finished=False)
    if todo:
        mark_unfinished(out)
    t0 = time.perf_counter()
    paths = [item.video for s in todo for item in s.clips]  # in write order
    videos = _Decoded(out, paths, opts)
    bar = tqdm(total=len(paths), desc=f"build {schema.name}", unit="sample", disable=not progress)
    try:
        for shard in todo:
            done[shard.name] = _write_shard(out, shard, videos, lambda: bar.update(1))
            write_part(out, 0, 1, fp, done, run=None, finished=False)
    finally:
        videos.close()
    bar.close()
    write_part(out, 0, 1, fp, done, run=None, finished=True)
    seconds = time.perf_counter() - t0
    manifest = _manifest(schema, splits, plan, done, opts, pre, source, fp, summary)
    atomic_write_json(out / MANIFEST, manifest)
    manifest["stats"] = {
        "shards": len(plan), "built_shards": len(todo), "reused_shards": len(plan) - len(todo),
        "clips_processed": len(paths), "videos_decoded": videos.decoded,
        "written": sum(done[s.name]["samples"] for s in todo),
        "skipped": sum(len(done[s.name]["skipped"]) for s in todo), "seconds": round(seconds, 3),
        "clips_per_s": round(len(paths) / seconds, 3) if paths and seconds > 0 else 0.0,
        "videos_per_s": round(videos.decoded / seconds, 3) if paths and seconds > 0 else 0.0}
    return manifest
