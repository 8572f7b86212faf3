"""``shards verify`` (re-hash and recount every shard against the manifest) and ``shards inspect``.

Reading a tar alone cannot notice a shard cut exactly at a member boundary: it just ends early. The
manifest's sha256, byte size and sample count per shard catch that and every other change.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..fileio import sha256_file
from .manifest import LEGACY_SCHEMA, read_manifest
from .tario import iter_raw_samples


def verify(shards_dir: str | Path, decode: bool = False) -> tuple[list[str], list[str]]:
    """-> (faults, notes). A fault is anything that differs from the manifest; ``decode`` also decodes
    every sample's media as the loaders do (JPEG, npy) and checks that its json is an object naming the
    sample's key. What the json holds is the task's to judge: its codec checks it when the loaders read it."""
    root = Path(shards_dir)
    m = read_manifest(root)
    faults: list[str] = []
    notes: list[str] = []
    listed = set()
    frame_size = int(m["preprocessing"]["frame_size"])
    for split, s in m["splits"].items():
        keys: set[str] = set()
        for sh in s["shards"]:
            path = root / sh["file"]
            listed.add(sh["file"])
            if not path.is_file():
                faults.append(f"{path}: missing")
                continue
            size = path.stat().st_size
            if size != sh["bytes"]:
                faults.append(f"{path}: {size} bytes, manifest says {sh['bytes']}")
            if sha256_file(path) != sh["sha256"]:
                faults.append(f"{path}: sha256 differs from the manifest (changed or truncated)")
            good = 0
            for raw in iter_raw_samples(path):
                if raw.error:
                    faults.append(f"{path}: {_plain(raw.error)}")
                    continue
                if raw.key in keys:
                    faults.append(f"{path}: duplicate key '{raw.key}' in split '{split}'")
                keys.add(raw.key)
                if decode:
                    from .stream import SampleError, decode_media

                    try:
                        decode_media(raw, frame_size=frame_size, img_size=frame_size)
                    except SampleError as e:
                        faults.append(f"{path}: {e}")
                        continue
                good += 1
            if good != sh["samples"]:
                faults.append(f"{path}: {good} readable samples, manifest says {sh['samples']}")
    for extra in sorted(p.name for p in root.glob("*.tar") if p.name not in listed):
        notes.append(f"{root / extra}: not in the manifest (ignored by the loaders)")
    for tmp in sorted(p.name for p in root.glob(".*.tmp")):
        notes.append(f"{root / tmp}: leftover of an interrupted write (safe to delete)")
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
    lines = [f"shards   {Path(shards_dir)}  (format {m['format']} v{m['version']}, schema {schema}, source "
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
