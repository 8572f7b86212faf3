"""A build's records: what each finished shard holds, kept per task, merged into ``manifest.json``.

Every build task (one for ``shards build``, N for a split build) writes its own part file
``parts/task-<i>-of-<n>.json`` atomically after each shard it finishes: the shard's file, sha256, sample
count, skipped records with reasons and what the dataset adds (AVE: notes and class histogram). A rerun reuses the finished shards whose
files still hash right, so a killed task redoes only its unfinished shards. When every shard of the plan has
a record, ``manifest.json`` is written from them in plan order: the same bytes whichever task layout built it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from ..fileio import atomic_write_json, sha256_file
from .manifest import MANIFEST
from .plan import Shard

PARTS = "parts"


def part_path(out: Path, task: int, tasks: int) -> Path:
    return out / PARTS / f"task-{task:04d}-of-{tasks:04d}.json"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it to rebuild what it recorded") from None


def load_done(out: Path, fingerprint: str) -> dict[str, dict[str, Any]]:
    """Records of finished shards, from ``manifest.json`` and every part file (not yet re-hashed).
    A folder built from other annotations or options is refused rather than mixed."""
    # Newest last, so a shard rebuilt after an earlier layout's build keeps its latest record.
    parts = sorted((out / PARTS).glob("task-*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    sources = [p for p in [out / MANIFEST] if p.exists()] + parts
    done: dict[str, dict[str, Any]] = {}
    for path in sources:
        old = _read_json(path)
        try:
            old_fp = old["build"]["fingerprint"]
            records = old["build"]["done"]
        except (KeyError, TypeError):
            raise ValueError(f"{path} exists but is not a shard build record; choose an empty --out folder") from None
        if old_fp != fingerprint:
            raise ValueError(f"{out} holds shards built from other annotations or options "
                             f"(fingerprint {old_fp}, now {fingerprint}); choose a new --out or delete {out}")
        done.update(records)
    return done


def mark_unfinished(out: Path) -> None:
    """A task about to rebuild shards of a finished folder: readers see ``complete: false`` (and a one-line
    'rerun to resume' error) until the final merge, not a manifest listing shards being rewritten."""
    path = out / MANIFEST
    if path.is_file():
        manifest = _read_json(path)
        if manifest.get("complete"):
            atomic_write_json(path, {**manifest, "complete": False})


def intact(out: Path, rec: dict[str, Any]) -> bool:
    """A finished shard whose file is still there with its recorded hash (or one that needed no file)."""
    if rec["file"] is None:
        return True
    path = out / rec["file"]
    return path.is_file() and path.stat().st_size == rec["bytes"] and sha256_file(path) == rec["sha256"]


def write_part(out: Path, task: int, tasks: int, fingerprint: str, done: dict[str, dict[str, Any]], *,
               run: str | None, finished: bool) -> None:
    """Task ``task``'s records; ``run`` (the job id) tells this job's parts from a previous job's."""
    atomic_write_json(part_path(out, task, tasks), {"task": task, "tasks": tasks, "run": run, "finished": finished,
                                                    "build": {"fingerprint": fingerprint, "done": done}})


def merge_if_complete(out: Path, plan: list[Shard], tasks: int, run: str | None, fingerprint: str,
                      make: Callable[[dict[str, dict[str, Any]]], dict[str, Any]]) -> dict[str, Any] | None:
    """Write ``manifest.json`` = ``make(records of every shard)`` once all ``tasks`` tasks (of job ``run``, when
    given) have finished; -> it, else None. Only this layout's parts count: each holds its task's reused and new records, so a part
    left by an earlier job cannot make a shard that is being rebuilt look finished. Two tasks finishing
    together may both write the manifest: the same bytes, each write atomic."""
    done: dict[str, dict[str, Any]] = {}
    for task in range(tasks):
        path = part_path(out, task, tasks)
        part = _read_json(path) if path.is_file() else {}
        if not part.get("finished") or (run is not None and part.get("run") != run):
            return None
        if part["build"]["fingerprint"] != fingerprint:
            raise ValueError(f"{path} records a build of other annotations or options; delete {out / PARTS}")
        done.update(part["build"]["done"])
    if any(s.name not in done for s in plan):
        return None
    manifest = make(done)
    atomic_write_json(out / MANIFEST, manifest)
    return manifest
