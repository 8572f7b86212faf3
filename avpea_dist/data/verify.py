"""``shards verify`` (re-hash and recount every shard against the manifest, check the readers' index) and
``shards inspect``.

Reading a tar alone cannot notice a shard cut exactly at a member boundary: it just ends early. The
manifest's sha256, byte size and sample count per shard catch that and every other change. This is the full
check a build's restart skips (it trusts a finished shard by size and recorded hash): at 2 million records
that is ~800 GB to read, so shards are checked by ``workers`` processes, with a progress bar on a terminal
and a log line every ``LOG_EVERY_S`` seconds otherwise.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .. import storage
from .index import INDEX, load_index, tar_layout
from .manifest import LEGACY_SCHEMA, read_manifest
from .tario import _TAR_ERRORS, RawSample, ShardFile, _samples

LOG_EVERY_S = 30.0
"""Without a terminal: one progress line (stderr) at most this often."""


def _check_shard(job: tuple[str, dict[str, Any], int, bool, list[int] | None, int | None]
                 ) -> tuple[list[str], list[str]]:
    """One shard (a path or URL) against its manifest entry (and its index offsets, when given) -> (faults, its
    sample keys). The shard is read once: hashed while its samples are walked."""
    path, sh, frame_size, decode, offsets, data_end = job
    shown = storage.redact(path)
    try:
        size = storage.size(path)
    except FileNotFoundError:
        return [f"{shown}: missing"], []
    faults: list[str] = []
    if size != sh["bytes"]:
        faults.append(f"{shown}: {size} bytes, manifest says {sh['bytes']}")
    keys: list[str] = []
    good, digest = 0, ""
    with ShardFile(path, hashing=True) as f:
        for raw in _walk(f, path):
            if raw.error:
                faults.append(f"{shown}: {_plain(raw.error)}")
                continue
            keys.append(raw.key)
            if decode:
                from .stream import SampleError, decode_media

                try:
                    decode_media(raw, frame_size=frame_size, img_size=frame_size)
                except SampleError as e:
                    faults.append(f"{shown}: {e}")
                    continue
            good += 1
        try:
            digest = f.hexdigest_to_end()
        except OSError:
            pass  # the object vanished or shrank mid-read: the hash and the sample count say so
        if digest != sh["sha256"]:
            f.drop_cached()
    if digest != sh["sha256"]:
        faults.append(f"{shown}: sha256 differs from the manifest (changed or truncated)")
    if good != sh["samples"]:
        faults.append(f"{shown}: {good} readable samples, manifest says {sh['samples']}")
    if offsets is not None and not faults:
        try:
            _, found, end = tar_layout(path)
        except (tarfile.TarError, OSError):
            found, end = [], -1
        if (found, end) != (offsets, data_end):
            faults.append(f"{shown}: sample offsets differ from {INDEX}'s index (rerun the build command to "
                          f"rewrite the index)")
    return faults, keys


def _walk(f: ShardFile, path: str) -> Iterator[RawSample]:
    """The samples of an open shard; a read that fails ends with one corrupt sample naming why."""
    try:
        yield from _samples(f, storage.name_of(path))
    except _TAR_ERRORS as e:
        yield RawSample("", error=f"truncated or unreadable shard {storage.name_of(path)}: {storage.redact(e)}")


def _jobs(root: Any, m: dict[str, Any], decode: bool) -> Iterator[tuple[str, tuple]]:
    frame_size = int(m["preprocessing"]["frame_size"])
    indexed = storage.exists(storage.join(root, INDEX))
    for split, s in m["splits"].items():
        try:
            idx = load_index(root, split) if indexed and s["shards"] else None
        except ValueError:  # reported by _index_faults; the shards are still checked against the manifest
            idx = None
        for n, sh in enumerate(s["shards"]):
            offsets = data_end = None
            if idx is not None and idx.offsets is not None and n < len(idx.files) and idx.files[n] == sh["file"]:
                lo = int(idx.starts[n])
                offsets = idx.offsets[lo:lo + int(idx.counts[n])].tolist()
                data_end = int(idx.data_end[n])
            yield split, (storage.join(root, sh["file"]), sh, frame_size, decode, offsets, data_end)


def _index_faults(root: Any, m: dict[str, Any]) -> list[str]:
    """The readers' index lists what the manifest lists (same shards, counts and hashes, per split)."""
    if not storage.exists(storage.join(root, INDEX)):
        return []
    faults = []
    try:
        entries = json.loads(storage.read_bytes(storage.join(root, INDEX)))["splits"]
    except (ValueError, KeyError, TypeError):
        entries = {}  # load_index below names what is wrong with it
    for split, s in m["splits"].items():
        if not s["shards"]:
            continue
        npz = storage.join(root, str(entries.get(split, {}).get("file", "")))
        if storage.exists(npz) and hashlib.sha256(storage.read_bytes(npz)).hexdigest() != entries[split].get("sha256"):
            faults.append(f"{storage.redact(npz)}: sha256 differs from {INDEX} (changed after the build); rerun the build command "
                          f"to rewrite the index")
        try:
            idx = load_index(root, split)
        except ValueError as e:
            faults.append(str(e))
            continue
        listed = [(sh["file"], sh["samples"], sh["sha256"]) for sh in s["shards"]]
        if list(zip(idx.files, idx.counts.tolist(), idx.sha256)) != listed:
            faults.append(f"{storage.redact(storage.join(root, INDEX))}: split '{split}' lists other shards than the manifest; rerun the build "
                          f"command to rewrite the index")
    return faults


def _reporter(total: int, progress: bool) -> tuple[Callable[[], None], Callable[[], None]]:
    """-> (tick, close): a tqdm bar on a terminal, else a log line (stderr) every ``LOG_EVERY_S`` seconds."""
    if not progress:
        return (lambda: None), (lambda: None)
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, desc="verify", unit="shard")
        return (lambda: bar.update(1)), bar.close
    state = {"done": 0, "t0": time.monotonic(), "last": time.monotonic()}

    def line() -> None:
        elapsed = time.monotonic() - state["t0"]
        print(f"verify: {state['done']}/{total} shards ({100 * state['done'] / max(1, total):.1f} %), "
              f"{elapsed:.0f} s", file=sys.stderr, flush=True)

    def tick() -> None:
        state["done"] += 1
        if time.monotonic() - state["last"] >= LOG_EVERY_S:
            state["last"] = time.monotonic()
            line()

    return tick, line


def _results(jobs: list[tuple], workers: int) -> Iterable[tuple[list[str], list[str]]]:
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_check_shard, jobs)
        return
    from concurrent.futures import ProcessPoolExecutor

    from . import worker_context

    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=worker_context()) as pool:
        yield from pool.map(_check_shard, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers))))


def verify(shards_dir: str | Path, decode: bool = False, *, workers: int = 1,
           progress: bool = False) -> tuple[list[str], list[str]]:
    """-> (faults, notes). A fault is anything that differs from the manifest (or, when the folder has one,
    from the readers' index); ``decode`` also decodes every sample's media as the loaders do (JPEG, npy) and
    checks that its json is an object naming the sample's key. What the json holds is the task's to judge:
    its codec checks it when the loaders read it. ``workers`` processes check shards at once; faults come in
    manifest order whatever their number."""
    if workers < 1:
        raise ValueError(f"--workers {workers}: must be >= 1")
    root = shards_dir if storage.is_url(shards_dir) else Path(shards_dir)  # s3:// and http(s):// too
    m = read_manifest(root)
    faults: list[str] = _index_faults(root, m)
    notes: list[str] = []
    listed = {sh["file"] for s in m["splits"].values() for sh in s["shards"]}
    planned = list(_jobs(root, m, decode))
    tick, close = _reporter(len(planned), progress)
    keys: dict[str, set[str]] = {}
    try:
        for (split, job), (shard_faults, shard_keys) in zip(planned, _results([j for _, j in planned], workers)):
            faults += shard_faults
            seen = keys.setdefault(split, set())
            for key in shard_keys:
                if key in seen:
                    faults.append(f"{storage.redact(job[0])}: duplicate key '{key}' in split '{split}'")
                seen.add(key)
            tick()
    finally:
        close()
    present = storage.listdir(str(root))  # {} on an HTTP server, which lists nothing
    for extra in sorted(n for n in present if n.endswith(".tar") and n not in listed):
        notes.append(f"{storage.redact(storage.join(root, extra))}: not in the manifest (ignored by the loaders)")
    for tmp in sorted(n for n in present if n.startswith(".") and n.endswith(".tmp")):
        notes.append(f"{storage.redact(storage.join(root, tmp))}: leftover of an interrupted write (safe to delete)")
    return faults, notes


_OBJECT_REPR = re.compile(r"\s*@?\s*<[\w.]+ object at 0x[0-9a-f]+>")


def _plain(error: str) -> str:
    """A reading error as a user reads it: the tar library names its stream by a Python object's repr
    ('unexpected end of data @ <...ShardFile object at 0x...>'), which says nothing the path does not."""
    return _OBJECT_REPR.sub("", error)


def describe(shards_dir: str | Path) -> str:
    """Human-readable schema, counts per split and class histogram."""
    m = read_manifest(shards_dir)
    pre = m["preprocessing"]
    schema = m.get("schema", LEGACY_SCHEMA)
    lines = [f"shards   {storage.redact(shards_dir)}  (format {m['format']} v{m['version']}, schema {schema}, source "
             f"{m['source']})",
             "sample schema (one tar member per row; key = one per annotation record, json id = video id):"]
    members = dict(m.get("members") or {})
    frames = [k for k in members if k.endswith(".jpg")]
    if len(frames) > 2:  # f0.jpg .. f9.jpg share one description
        members = {f"{frames[0]}..{frames[-1]}": members[frames[0]].replace(" 0,", " i,").replace(" 0 ", " i ")}
        members.update({k: v for k, v in m["members"].items() if k not in frames})
    unit = {"avqa": "questions", "captions": "captions"}.get(schema)  # what a sample holds besides its media
    lines += [f"  {name:<16} {what}" for name, what in members.items()]
    lines.append("preprocessing: " + ", ".join(f"{k}={v}" for k, v in pre.items() if k != "fbank_layout"))
    lines.append(f"{'split':<6} {'clips':>6} {'shards':>6} {'MB':>8} {'skipped':>7}" + (f" {unit:>9}" if unit else ""))
    for split, s in m["splits"].items():
        mb = sum(sh["bytes"] for sh in s["shards"]) / 1e6
        lines.append(f"{split:<6} {s['samples']:>6} {len(s['shards']):>6} {mb:>8.1f} {len(s.get('skipped', [])):>7}"
                     + (f" {s.get(unit, '-'):>9}" if unit else ""))
    if "classes" not in m:
        return "\n".join(lines)
    lines.append("segments per class (" + " / ".join(m["splits"]) + "):")
    width = max(len(c) for c in m["classes"])
    for i, c in enumerate(m["classes"]):
        counts = [s["segment_histogram"][i] for s in m["splits"].values()]
        lines.append(f"  {i:>2} {c:<{width}} " + " ".join(f"{n:>6}" for n in counts))
    return "\n".join(lines)


def summary(manifest: dict[str, Any]) -> str:
    parts = ", ".join(f"{k} {v['samples']}" for k, v in manifest["splits"].items())
    return f"{sum(v['samples'] for v in manifest['splits'].values())} clips ({parts})"
