"""``shards verify`` (re-hash and recount every shard against the manifest) and ``shards inspect``.

Reading a tar alone cannot notice a shard cut exactly at a member boundary: it just ends early. The
manifest's sha256, byte size and sample count per shard catch that and every other change.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from .. import storage
from .manifest import LEGACY_SCHEMA, read_manifest
from .tario import _TAR_ERRORS, RawSample, ShardFile, _samples


def verify(shards_dir: str | Path, decode: bool = False) -> tuple[list[str], list[str]]:
    """-> (faults, notes). A fault is anything that differs from the manifest; ``decode`` also decodes
    every sample's media as the loaders do (JPEG, npy) and checks that its json is an object naming the
    sample's key. What the json holds is the task's to judge: its codec checks it when the loaders read it.
    ``shards_dir`` may be a URL (``storage``): each shard is read once, hashed while its samples are walked."""
    root = shards_dir if storage.is_url(shards_dir) else Path(shards_dir)
    m = read_manifest(root)
    faults: list[str] = []
    notes: list[str] = []
    listed = set()
    present = storage.listdir(str(root))  # {} on an HTTP server: each shard is then asked for by name
    frame_size = int(m["preprocessing"]["frame_size"])
    for split, s in m["splits"].items():
        keys: set[str] = set()
        for sh in s["shards"]:
            path = storage.join(root, sh["file"])
            shown = storage.redact(path)
            listed.add(sh["file"])
            try:
                size = present[sh["file"]] if sh["file"] in present else storage.size(path)
            except FileNotFoundError:
                faults.append(f"{shown}: missing")
                continue
            if size != sh["bytes"]:
                faults.append(f"{shown}: {size} bytes, manifest says {sh['bytes']}")
            good, digest = 0, ""
            with ShardFile(path, hashing=True) as f:
                for raw in _walk(f, path):
                    if raw.error:
                        faults.append(f"{shown}: {_plain(raw.error)}")
                        continue
                    if raw.key in keys:
                        faults.append(f"{shown}: duplicate key '{raw.key}' in split '{split}'")
                    keys.add(raw.key)
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
                    pass  # the object vanished or shrank mid-read: the sample count and the hash say so
            if digest != sh["sha256"]:
                faults.append(f"{shown}: sha256 differs from the manifest (changed or truncated)")
                f.drop_cached()
            if good != sh["samples"]:
                faults.append(f"{shown}: {good} readable samples, manifest says {sh['samples']}")
    names = present if present else {}
    for extra in sorted(n for n in names if n.endswith(".tar") and n not in listed):
        notes.append(f"{storage.redact(storage.join(root, extra))}: not in the manifest (ignored by the loaders)")
    for tmp in sorted(n for n in names if n.startswith(".") and n.endswith(".tmp")):
        notes.append(f"{storage.redact(storage.join(root, tmp))}: leftover of an interrupted write (safe to delete)")
    return faults, notes


def _walk(f: ShardFile, path: str) -> Iterator[RawSample]:
    """The samples of an open shard; a read that fails ends with one corrupt sample naming why."""
    try:
        yield from _samples(f, storage.name_of(path))
    except _TAR_ERRORS as e:
        yield RawSample("", error=f"truncated or unreadable shard {storage.name_of(path)}: {storage.redact(e)}")


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
