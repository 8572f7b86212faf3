"""A build's records: what each finished shard holds, kept per task, merged into ``manifest.json``.

Every build task (one for ``shards build``, N for a split build) keeps its own progress file
``parts/task-<i>-of-<n>.jsonl``: a header line (task, tasks, run, fingerprint) and the records it reuses,
written when the task starts, then one line appended (and fsynced) per shard it finishes, never rewritten, and
a last ``{"finished": true}`` line; at 2 million records (~15,600 shards) the bookkeeping stays linear. A
record holds the shard's file, sha256, byte size, sample count, skipped records with reasons, what the
dataset adds (AVE: notes and class histogram), the readers' index fields (each sample's byte offset, labels)
and ``inputs``: the stamp (name, size, mtime) of each sample's video when the shard was built. A rerun
trusts a finished shard whose file still has its recorded size (and a recorded sha256; the full re-hash is
``shards verify``) and whose videos still carry the same stamps, so a killed task redoes only its unfinished
shards and a video the user added or replaced since rebuilds the shards holding it. A line cut short by a
kill is ignored. When every shard of the plan has a record, the readers' index, ``manifest.json`` (in plan
order, without stamps or index fields: the same bytes whichever task layout built it) and ``index.json`` are
written. Progress files of the earlier format (``task-*.json``, one document rewritten per shard) are still
read for resuming.

``check_out`` keeps a build out of folders holding anything else; ``clear_build`` (``--rebuild``) removes an
earlier build's own files only.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

from ..fileio import atomic_write_json, atomic_write_text
from .index import INDEX, INDEX_DIR, RECORD_KEYS, withdraw, write_split_indexes
from .manifest import MANIFEST
from .plan import Shard

PARTS = "parts"
INPUTS = "inputs"
"""A part record's video stamps (``videos.stamp`` per sample, in write order); not copied into the manifest."""
JOB_FOLDERS = ("submitit",)
"""Written into --out by the job that runs a split build, before its tasks start."""


def part_path(out: Path, task: int, tasks: int) -> Path:
    return out / PARTS / f"task-{task:04d}-of-{tasks:04d}.jsonl"


def _part_files(out: Path) -> list[Path]:
    """Every progress file, either format."""
    return [*(out / PARTS).glob("task-*.json"), *(out / PARTS).glob("task-*.jsonl")]


def check_out(out: Path) -> None:
    """Refuse (one line) an --out that is a file, or a folder holding anything but an earlier shard build
    (recognised by its ``manifest.json`` or ``parts/``): a build never writes over a user's own files."""
    try:
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file, not a folder; name a new folder (or one holding an earlier "
                             f"build) for the shards")
        if not out.is_dir() or (out / MANIFEST).is_file() or (out / PARTS).is_dir():
            return
        foreign = sorted(p.name for p in out.iterdir() if p.name not in JOB_FOLDERS and not p.name.startswith("."))
    except (NotADirectoryError, PermissionError) as e:
        raise ValueError(f"--out {out} cannot be used as a shard folder ({e.strerror}); name a new folder") from None
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ValueError(f"--out {out} holds files that are not a shard build ({shown}); a build writes only into "
                         f"an empty folder or one holding its own earlier build: name a new --out")


def make_out(out: Path) -> None:
    """``check_out``, then create the folder (a path under a file, or one not writable, is one line too)."""
    check_out(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {out} cannot be created ({e.strerror}); name a folder you can write") from None


def clear_build(out: Path) -> list[str]:
    """``--rebuild``: remove an earlier build's own files from ``out`` (its manifest, part records, the shards
    they list, decoding leftovers); -> the names removed. Anything else is refused first (``check_out``)."""
    check_out(out)
    if not out.is_dir():
        return []
    sources = [p for p in [out / MANIFEST] if p.is_file()] + sorted(_part_files(out))
    files = set()
    for path in sources:
        try:
            records = (read_part(path) if path.parent.name == PARTS else _read_json(path))["build"]["done"].values()
            files.update(r["file"] for r in records if isinstance(r.get("file"), str) and "/" not in r["file"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # an unreadable record: its shards are overwritten by the new build
    removed = []
    for name in sorted(files):
        if (out / name).is_file():
            (out / name).unlink()
            removed.append(name)
    for name in (INDEX, MANIFEST, INDEX_DIR, PARTS, ".decoded"):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
            removed.append(name)
        elif path.is_file():
            path.unlink()
            removed.append(name)
    if PARTS in removed:
        (out / PARTS).mkdir()  # empty: still marks the folder as a build's, beside the user's own files
    return removed


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it to rebuild what it recorded") from None


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    text = path.read_text()
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError as e:
            if i == len(lines) - 1:  # no newline after it: a write cut short by a kill, its shard not finished
                return
            raise ValueError(f"{path}, line {i + 1} is not valid JSON ({e}); delete the file to rebuild what it "
                             f"recorded") from None


def read_part(path: Path) -> dict[str, Any]:
    """A progress file (either format) -> ``{"task", "tasks", "run", "finished", "build": {"fingerprint",
    "done": {shard: record}}}``."""
    if path.suffix == ".json":
        return _read_json(path)
    part: dict[str, Any] = {"finished": False, "build": {"fingerprint": None, "done": {}}}
    for n, line in enumerate(_lines(path)):
        if n == 0:
            if "fingerprint" not in line:
                raise ValueError(f"{path} does not start with a build header; delete it to rebuild what it recorded")
            part.update(task=line.get("task"), tasks=line.get("tasks"), run=line.get("run"))
            part["build"]["fingerprint"] = line["fingerprint"]
        elif "shard" in line and "record" in line:
            part["build"]["done"][line["shard"]] = line["record"]
        elif line.get("finished"):
            part["finished"] = True
    return part


def load_done(out: Path, fingerprint: str) -> dict[str, dict[str, Any]]:
    """Records of finished shards, from ``manifest.json`` and every progress file (not yet checked).
    A folder built from other annotations or options is refused rather than mixed."""
    # Newest last, so a shard rebuilt after an earlier layout's build keeps its latest record.
    parts = sorted(_part_files(out), key=lambda p: (p.stat().st_mtime_ns, p.name))
    sources = [p for p in [out / MANIFEST] if p.exists()] + parts
    done: dict[str, dict[str, Any]] = {}
    for path in sources:
        old = read_part(path) if path.parent.name == PARTS else _read_json(path)
        try:
            old_fp = old["build"]["fingerprint"]
            records = old["build"]["done"]
        except (KeyError, TypeError):
            raise ValueError(f"{path} exists but is not a shard build record; choose an empty --out folder") from None
        if old_fp != fingerprint:
            raise ValueError(f"{out} holds shards built from other annotations or options "
                             f"(fingerprint {old_fp}, now {fingerprint}); choose a new --out, or pass --rebuild "
                             f"to replace that build")
        done.update(records)
    return done


def mark_unfinished(out: Path) -> None:
    """A task about to rebuild shards of a finished folder: readers see ``complete: false`` (and a one-line
    'rerun to resume' error) until the final merge, not a manifest listing shards being rewritten."""
    withdraw(out)  # index.json first: it is what readers take for "complete"
    path = out / MANIFEST
    if path.is_file():
        manifest = _read_json(path)
        if manifest.get("complete"):
            atomic_write_json(path, {**manifest, "complete": False})


def intact(out: Path, rec: dict[str, Any]) -> bool:
    """A finished shard whose file is still there with its recorded size and a recorded hash (or one that
    needed no file). Not re-hashed: at 2M records that is ~800 GB read per restart; ``shards verify`` does it."""
    if rec["file"] is None:
        return True
    try:
        return (out / rec["file"]).stat().st_size == rec["bytes"] and bool(rec.get("sha256"))
    except OSError:
        return False


def start_part(out: Path, task: int, tasks: int, fingerprint: str, done: dict[str, dict[str, Any]], *,
               run: str | None) -> None:
    """Task ``task``'s progress file, new for this run of it: the header and the records it reuses. ``run``
    (the job id) tells this job's parts from a previous job's."""
    head = {"task": task, "tasks": tasks, "run": run, "fingerprint": fingerprint}
    atomic_write_text(part_path(out, task, tasks), "".join(
        json.dumps(x) + "\n" for x in [head, *({"shard": k, "record": v} for k, v in done.items())]))


def _append(out: Path, task: int, tasks: int, line: dict[str, Any]) -> None:
    with open(part_path(out, task, tasks), "a") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()
        os.fsync(f.fileno())


def append_record(out: Path, task: int, tasks: int, shard: str, rec: dict[str, Any]) -> None:
    """One finished shard: one line appended and fsynced (the shard itself is already in place)."""
    _append(out, task, tasks, {"shard": shard, "record": rec})


def finish_part(out: Path, task: int, tasks: int) -> None:
    _append(out, task, tasks, {"finished": True})


def merge_if_complete(out: Path, plan: list[Shard], tasks: int, run: str | None, fingerprint: str,
                      make: Callable[[dict[str, dict[str, Any]]], dict[str, Any]]) -> dict[str, Any] | None:
    """Write ``manifest.json`` = ``make(records of every shard)`` once all ``tasks`` tasks (of job ``run``, when
    given) have finished; -> it, else None. Only this layout's parts count: each holds its task's reused and new records, so a part
    left by an earlier job cannot make a shard that is being rebuilt look finished. Two tasks finishing
    together may both write the manifest: the same bytes, each write atomic."""
    records: dict[str, dict[str, Any]] = {}
    for task in range(tasks):
        path = part_path(out, task, tasks)
        part = read_part(path) if path.is_file() else {}
        if not part.get("finished") or (run is not None and part.get("run") != run):
            return None
        if part["build"]["fingerprint"] != fingerprint:
            raise ValueError(f"{path} records a build of other annotations or options; delete {out / PARTS}")
        records.update(part["build"]["done"])
    if any(s.name not in records for s in plan):
        return None
    manifest = make({name: {k: v for k, v in rec.items() if k != INPUTS and k not in RECORD_KEYS}
                     for name, rec in records.items()})
    # index/ first, then the manifest, then index.json: readers take index.json as "complete"
    body = write_split_indexes(out, manifest, records)
    atomic_write_json(out / MANIFEST, manifest)
    atomic_write_json(out / INDEX, body)
    return manifest
