"""The shard build every dataset shares: parallel, atomic, resumable, split across tasks, tolerant of bad clips.

A dataset's builder reads its release into a ``Release``: the samples of each split (each with a ``key`` and a
``video``) and how a sample is recorded (its json member, what a skip or a write adds to the shard's record, the
manifest). The plan (``plan.py``) shuffles each split's samples with a seed and cuts them into shards of
``shard_size`` (``train-000000.tar`` ...); a build task takes every ``tasks``-th shard of it. Worker processes
decode each video once, however many samples use it; the task writes each shard atomically in plan order and
after every shard its part record (``parts.py``), so an interrupted task resumes from its first unfinished
shard. A video that cannot be decoded skips its samples with the reason; a worker killed by a crashing decoder
costs only that video. A rerun compares each finished shard's video stamps (``videos.stamp``: name, size,
mtime) with the files now there and rebuilds the shards whose videos were added, replaced or removed since,
so that no skip reason or sample outlives the file it came from. The task that finds every shard recorded
writes ``manifest.json``: the same bytes whichever task layout built it.
"""

from __future__ import annotations

import shutil
import tarfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from ..fileio import atomic_open, sha256_file
from .build import ordered_results, preprocessing
from .index import tar_layout
from .options import BuildOptions
from .parts import (INPUTS, append_record, finish_part, intact, load_done, make_out, mark_unfinished,
                    merge_if_complete, start_part)
from .plan import Shard, make_plan, task_shards
from .videos import stamp

CACHE = ".decoded"
"""Under the shard folder: decoded videos waiting for a later sample (removed when the task ends)."""


class Release:
    """One build's input: ``splits`` = {split: samples in release order}; ``source`` goes into the manifest.
    Subclasses say how a sample is recorded; a sample has a ``key`` (unique, webdataset-safe) and a video."""

    def __init__(self, splits: dict[str, list[Any]], source: str) -> None:
        self.splits, self.source = splits, source

    def video(self, sample: Any) -> str:
        """The path of the video ``sample`` is cut from."""
        return sample.video

    def fingerprint(self, plan: list[Shard], pre: dict[str, Any]) -> str:
        """What the shards are built from (refuses to mix builds of other input or options in one folder)."""
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        """The fields of a shard's record after ``skipped`` (kept in the part files and the manifest)."""
        return {}

    def skipped(self, rec: dict[str, Any], sample: Any, reason: str) -> None:
        """Record that ``sample`` could not be written (its video could not be decoded)."""
        raise NotImplementedError

    def written(self, rec: dict[str, Any], sample: Any) -> bytes:
        """Record ``sample`` as written; -> its ``json`` member."""
        raise NotImplementedError

    def labels(self, sample: Any) -> list[int] | None:
        """The class indices ``sample`` is labelled with (into the manifest's ``classes``), for the readers'
        index (balanced sampling); None: this release gives no per-sample class labels."""
        return None

    def identities(self, sample: Any) -> list[dict[str, Any]]:
        """What makes each release record ``sample`` holds the same record wherever it is listed (AVE: video,
        category, start, end): one found in two splits is reported in the manifest's ``in_several_splits``."""
        raise NotImplementedError

    def manifest(self, plan: list[Shard], done: dict[str, dict[str, Any]], opts: BuildOptions,
                 pre: dict[str, Any], fingerprint: str) -> dict[str, Any]:
        """The manifest of a finished build; ``done`` holds a record for every shard of ``plan``."""
        raise NotImplementedError


class Decoded:
    """Each video decoded once, however many samples use it (one AVE video holds several records, a MUSIC-AVQA
    video sits in several splits): a result still needed later waits on disk (one small tar each, removed at
    its last use): holding it in memory from the train shards to the test shards could hold thousands."""

    def __init__(self, cache: Path, paths: list[str], opts: BuildOptions) -> None:
        self.uses = Counter(paths)
        unique = list(dict.fromkeys(paths))  # first-use order, the order they are taken in
        self.results = ordered_results(unique, opts) if unique else iter(())
        self.decoded = len(unique)
        self.cache = cache
        shutil.rmtree(self.cache, ignore_errors=True)  # a killed task's leftovers
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
        try:
            self.cache.parent.rmdir()  # the shared .decoded/ once no task uses it
        except OSError:
            pass


def _write_result(path: Path, result: tuple[str, Any]) -> None:
    status, payload = result
    with atomic_open(path, "wb") as f:
        from .tario import TarShardWriter  # webdataset and torch: only where shards are written

        writer = TarShardWriter(f)
        writer.write("r", payload if status == "ok" else {"skip": str(payload).encode()})
        writer.close()


def _read_result(path: Path) -> tuple[str, Any]:
    with tarfile.open(path) as tar:
        members = {m.name[2:]: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    return ("skip", members["skip"].decode()) if "skip" in members else ("ok", members)


def _inputs(release: Release, shard: Shard) -> list[Any]:
    # a video cut from a longer file is (path, start, end): the file is what the user may fix
    return [stamp(v[0] if isinstance(v, tuple) else v) for v in map(release.video, shard.clips)]


def _change(old: list[Any] | None, now: list[Any]) -> str:
    """What differs between a shard's recorded video stamps and the files now: one phrase, naming a video."""
    if old is None or len(old) != len(now):
        return "recorded without its videos' stamps (an earlier version, or parts/ removed)"
    for was, new in zip(old, now):
        if was != new:
            if was is None:
                return f"{new[0]} added"
            if new is None:
                return f"{was[0]} removed"
            return f"{new[0]} replaced" if was[0] == new[0] else f"{was[0]} now {new[0]}"
    return "unchanged"


def _write_shard(out: Path, shard: Shard, release: Release, videos: Decoded, tick: Callable[[], None]) -> dict:
    # Stamped before decoding: a file replaced while it is decoded makes the next run rebuild this shard.
    rec: dict[str, Any] = {"file": None, "sha256": None, "bytes": 0, "samples": 0, "skipped": [],
                           **release.record(), INPUTS: _inputs(release, shard)}
    path = out / f"{shard.name}.tar"
    with atomic_open(path, "wb") as f:
        from .tario import TarShardWriter  # webdataset and torch: only where shards are written

        writer = TarShardWriter(f)
        offsets: list[int] = []  # of each sample's first header, for the readers' index
        labels: list[list[int]] | None = []
        for sample in shard.clips:
            status, payload = videos.take(release.video(sample))
            tick()
            if status == "skip":
                release.skipped(rec, sample, payload)
                continue
            offsets.append(f.tell())  # tarfile writes straight to f: its position is the next header's
            writer.write(sample.key, {**payload, "json": release.written(rec, sample)})
            ids = release.labels(sample)
            if ids is None:
                labels = None
            elif labels is not None:
                labels.append([int(i) for i in ids])
        data_end = f.tell()
        writer.close()
    if writer.samples:
        rec.update(file=path.name, sha256=sha256_file(path), bytes=path.stat().st_size, samples=writer.samples,
                   offsets=offsets, data_end=data_end)
        if labels is not None:
            rec["label_ids"] = labels
    else:
        path.unlink()  # every sample of this shard was skipped: no empty tar
    return rec


def _index_fields(out: Path, shard: Shard, rec: dict[str, Any], release: Release) -> dict[str, Any] | None:
    """A reused shard recorded before its samples' offsets (and labels) were: read them from its tar headers
    (512 bytes a member), so a resumed older build still gets a full index; None (rebuild it) when the
    headers no longer read as the record says."""
    if rec["file"] is None or ("offsets" in rec and "data_end" in rec):
        return rec
    try:
        keys, offsets, data_end = tar_layout(out / rec["file"])
    except (tarfile.TarError, OSError):
        return None
    if len(keys) != rec["samples"]:
        return None
    rec = {**rec, "offsets": offsets, "data_end": data_end}
    by_key = {sample.key: sample for sample in shard.clips}
    labels = [release.labels(by_key[k]) if k in by_key else None for k in keys]
    if labels and all(x is not None for x in labels):
        rec["label_ids"] = [[int(i) for i in x] for x in labels]  # type: ignore[union-attr]
    return rec


SEVERAL_SPLITS = "in_several_splits"
"""Manifest field, present only when the release lists a record in two or more splits (a leak between them):
``[{...the record's identity, "splits": [...]}]``."""


def _with_shared_records(manifest: dict[str, Any], release: Release) -> dict[str, Any]:
    from .ids import in_several_splits

    shared = in_several_splits({split: (i for sample in samples for i in release.identities(sample))
                                for split, samples in release.splits.items()})
    if not shared:
        return manifest  # the manifest of a clean release keeps its bytes
    build = manifest.pop("build")
    return {**manifest, SEVERAL_SPLITS: shared, "build": build}


def _merge(out: Path, release: Release, opts: BuildOptions, plan: list[Shard], pre: dict[str, Any], fp: str,
           tasks: int, run: str | None) -> dict[str, Any] | None:
    return merge_if_complete(out, plan, tasks, run, fp,
                             lambda done: _with_shared_records(release.manifest(plan, done, opts, pre, fp), release))


def build_task(out: Path, release: Release, opts: BuildOptions, *, task: int = 0, tasks: int = 1,
               run: str | None = None, progress: bool = True, prepare: Callable[[list[Any]], None] | None = None,
               desc: str = "build") -> dict[str, Any]:
    """Build (or resume) task ``task`` of ``tasks``: shards task, task + tasks, ... of the plan of ``release``.

    ``prepare(samples)`` runs first with the samples about to be decoded. -> ``{"manifest": the merged
    manifest when this task finished last, else None, "stats": {...}, "changes": ["<shard>: <what changed>"
    per finished shard rebuilt because its videos changed]}``."""
    from tqdm import tqdm

    pre = preprocessing(opts)
    plan = make_plan(release.splits, opts.shard_size, opts.order_seed)
    fp = release.fingerprint(plan, pre)
    make_out(out)
    previous = load_done(out, fp)
    mine = task_shards(plan, task, tasks)
    done: dict[str, dict[str, Any]] = {}
    changes: list[str] = []
    for s in mine:
        rec = previous.get(s.name)
        if rec is None or not intact(out, rec):
            continue
        change = _change(rec.get(INPUTS), _inputs(release, s))
        if change != "unchanged":
            changes.append(f"{s.name}: {change}")
        elif (full := _index_fields(out, s, rec, release)) is not None:
            done[s.name] = full  # else: its tar no longer reads as recorded, rebuilt like a lost one
    todo = [s for s in mine if s.name not in done]
    start_part(out, task, tasks, fp, done, run=run)
    if todo:
        mark_unfinished(out)
    if prepare is not None:
        prepare([c for s in todo for c in s.clips])
    t0 = time.perf_counter()
    paths = [release.video(sample) for s in todo for sample in s.clips]  # in write order
    videos = Decoded(out / CACHE / f"task-{task:04d}-of-{tasks:04d}", paths, opts)
    bar = tqdm(total=len(paths), desc=f"{desc} {task + 1}/{tasks}", unit="sample", disable=not progress)
    try:
        for shard in todo:
            done[shard.name] = _write_shard(out, shard, release, videos, lambda: bar.update(1))
            append_record(out, task, tasks, shard.name, done[shard.name])
    finally:
        videos.close()
    bar.close()
    finish_part(out, task, tasks)
    seconds = time.perf_counter() - t0
    manifest = _merge(out, release, opts, plan, pre, fp, tasks, run)
    rate = (lambda n: round(n / seconds, 3) if paths and seconds > 0 else 0.0)
    return {"manifest": manifest, "changes": changes, "stats": {
        "task": task, "tasks": tasks, "shards": len(mine), "built_shards": len(todo),
        "reused_shards": len(mine) - len(todo), "changed_shards": len(changes), "clips_processed": len(paths),
        "videos_decoded": videos.decoded,
        "written": sum(done[s.name]["samples"] for s in todo),
        "skipped": sum(len(done[s.name]["skipped"]) for s in todo), "seconds": round(seconds, 3),
        "clips_per_s": rate(len(paths)), "videos_per_s": rate(videos.decoded)}}


def merge(out: Path, release: Release, opts: BuildOptions, tasks: int) -> dict[str, Any] | None:
    """Merge the parts of a finished job of ``tasks`` tasks (any job) into ``manifest.json``; None if unfinished."""
    pre = preprocessing(opts)
    plan = make_plan(release.splits, opts.shard_size, opts.order_seed)
    return _merge(out, release, opts, plan, pre, release.fingerprint(plan, pre), tasks, None)
