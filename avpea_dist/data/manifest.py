"""The shard format: member names, constants and the validated ``manifest.json`` (no heavy imports).

``manifest.json`` at the shard root: ``format``, ``version``, ``complete``, ``schema`` (the json each sample
holds, read by the task's codec: one of ``plugins.schemas()``; 'avel' when absent, see ``LEGACY_SCHEMA``),
``source``, ``preprocessing`` (including ``audio_windows``: 'exact' or 'linspace'), ``members`` (the sample
schema), ``classes`` (schemas with class labels, e.g. AVE's: ``labels`` index into it), ``shard_size``,
``splits.<split>`` = ``{records, order_seed, samples, shards: [{file, sha256, bytes, samples}], skipped: [{id,
key, reason}], ...}`` with ``records == samples + len(skipped)`` (each dataset adds its own fields, e.g. AVE's
``notes`` and ``segment_histogram``), and ``build`` (the resume records).
Shards written before per-record keys lack ``records``, ``order_seed`` and ``notes``; readers need none.

At 2 million records the per-shard and per-skip lists make the manifest ~100 MB: training ranks, the tasks
and run folders read its described form (``describe``) instead (a few kB), which a build writes into ``index.json``
(``read_description``): the same document with each split's ``shards`` and ``skipped`` lists replaced by their
lengths, ``first_skip`` (the first skipped record, for error messages) and no ``build`` records. The lists
themselves are the readers' index's (shards) and ``avpea shards inspect``'s (skips).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .. import plugins, storage

FORMAT = "avpea-shards"
VERSION = 1
MANIFEST = "manifest.json"
INDEX = "index.json"
"""The readers' compact index (``data.index``), written last by a finished build."""
INDEX_DIR = "index"
RECORD_KEYS = ("offsets", "data_end", "label_ids")
"""Fields of a shard's build record that only the index needs: left out of ``manifest.json``."""
SEGMENTS = 10
"""Segments per sample (one frame and one second of audio each): the format's fixed length."""
MEL_BINS = 128
FBANK_FRAMES = 102
FRAME_MEMBERS = tuple(f"f{i}.jpg" for i in range(SEGMENTS))
MEMBERS = (*FRAME_MEMBERS, "fbank.npy", "json")
LEGACY_SCHEMA = "avel"
"""The schema of a manifest without ``schema``: the AVE builder's, which wrote manifests before schemas existed
and keeps writing the same bytes (a fact about those files, not a default for other datasets)."""
FIX = "rebuild them with `avpea shards build DATASET ... --out DIR` (datasets: `avpea shards build --help`)"


def member_names(json_doc: str) -> dict[str, str]:
    """The manifest's ``members``: the media every sample holds, and ``json`` as the dataset describes it."""
    names = {m: f"frame of segment {i}, JPEG RGB frame_size x frame_size" for i, m in enumerate(FRAME_MEMBERS)}
    names["fbank.npy"] = "float16 (segments, mel_bins, fbank_frames) log-mel, numpy .npy (no pickle)"
    names["json"] = json_doc
    return names


def read_manifest(shards_dir: str | Path) -> dict[str, Any]:
    """The validated ``manifest.json`` of a shard folder or URL prefix (``s3://``, ``http(s)://``: read through
    ``storage``); errors name the file and the fix."""
    path = storage.redact(storage.join(shards_dir, MANIFEST))
    try:
        text = storage.read_bytes(storage.join(shards_dir, MANIFEST))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise FileNotFoundError(f"{path} not found: '{storage.redact(shards_dir)}' holds no built shards; "
                                f"{FIX}") from None
    try:
        m = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); {FIX}") from None
    return check(m, path)


def check(m: Any, path: str, described: bool = False) -> dict[str, Any]:
    """``m`` if it is a complete manifest this code reads (``described``: its ``describe`` form), else a
    ValueError naming ``path`` and the fix."""
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ValueError(f"{path} is not an avpea shard manifest (no \"format\": \"{FORMAT}\"); {FIX}")
    if m.get("version") != VERSION:
        raise ValueError(f"{path} has format version {m.get('version')!r}; this code reads {VERSION}; {FIX}")
    if not m.get("complete"):
        raise ValueError(f"{path} describes an unfinished build; rerun the same `avpea shards build` command "
                         f"to resume it")
    schema = m.get("schema", LEGACY_SCHEMA)
    known = plugins.schemas()  # what the installed datasets write and tasks read
    if schema not in known:
        raise ValueError(f"{path}: 'schema' is {schema!r}; this code reads {', '.join(map(repr, known))}; {FIX}")
    classes = m.get("classes")
    if ("classes" in m or "schema" not in m) and not (
            isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)):
        raise ValueError(f"{path}: 'classes' must be a list of at least two class names; {FIX}")
    if not isinstance(m.get("preprocessing"), dict) or not isinstance(m["preprocessing"].get("frame_size"), int):
        raise ValueError(f"{path}: 'preprocessing.frame_size' is missing; {FIX}")
    splits = m.get("splits")
    if not isinstance(splits, dict):
        raise ValueError(f"{path}: 'splits' is missing; {FIX}")
    for name, s in splits.items():
        if described:
            if not (isinstance(s, dict) and isinstance(s.get("samples"), int) and isinstance(s.get("shards"), int)
                    and (s["samples"] > 0) == (s["shards"] > 0)):
                raise ValueError(f"{path}: split '{name}' needs 'samples' and 'shards' counts; {FIX}")
            continue
        try:
            counts = [int(sh["samples"]) for sh in s["shards"]]
            files = [str(sh["file"]) for sh in s["shards"]]
            total = int(s["samples"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: split '{name}' needs 'samples' and 'shards' entries with 'file' and "
                             f"'samples'; {FIX}") from None
        if sum(counts) != total or any(c < 1 for c in counts) or any("/" in f or f.startswith(".") for f in files):
            raise ValueError(f"{path}: split '{name}' has inconsistent sample counts or file names; {FIX}")
    return m


def shards_fingerprint(manifest: dict[str, Any]) -> str:
    """A short hash of every shard's split, name and sha256: the data, wherever the folder lies (a resumed run
    checks it); a description carries it as ``data_fingerprint``."""
    if "data_fingerprint" in manifest:
        return str(manifest["data_fingerprint"])
    entries = sorted((split, s.get("file"), s.get("sha256")) for split, info in manifest.get("splits", {}).items()
                     for s in info.get("shards", []))
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def describe(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as readers need it: without ``build``, with each split's ``shards`` and ``skipped`` lists
    as counts (``first_skip``: the first skipped record or None) and the shards' ``data_fingerprint``. A
    description describes itself."""
    out = {k: v for k, v in manifest.items() if k not in ("build", "splits")}
    out["data_fingerprint"] = shards_fingerprint(manifest)
    out["splits"] = {}
    for name, s in (manifest.get("splits") or {}).items():
        d = {k: v for k, v in s.items() if k not in ("shards", "skipped")}
        shards, skipped = s.get("shards", []), s.get("skipped", [])
        d["shards"] = len(shards) if isinstance(shards, list) else int(shards)
        d["skipped"] = len(skipped) if isinstance(skipped, list) else int(skipped)
        d["first_skip"] = (skipped[0] if skipped else None) if isinstance(skipped, list) else s.get("first_skip")
        out["splits"][name] = d
    return out


def read_description(shards_dir: str | Path) -> dict[str, Any]:
    """``describe(manifest)`` of a shard folder or URL prefix: from ``index.json``, where a build since the
    description existed put it (one small read), else from ``manifest.json`` (older folders)."""
    index = storage.join(shards_dir, INDEX)
    try:
        text = storage.read_bytes(index)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return describe(read_manifest(shards_dir))
    try:
        m = json.loads(text).get("manifest")
    except (ValueError, UnicodeDecodeError, AttributeError) as e:
        raise ValueError(f"{storage.redact(index)} is not valid JSON ({e}); {FIX}") from None
    if m is None:  # an index written before it carried the description
        return describe(read_manifest(shards_dir))
    return check(m, storage.redact(index), described=True)


def split_entry(manifest: dict[str, Any], split: str, where: str | Path = MANIFEST) -> dict[str, Any]:
    s = manifest["splits"].get(split)
    if s is None or not s["shards"]:
        have = ", ".join(k for k, v in manifest["splits"].items() if v["shards"]) or "none"
        raise ValueError(f"{where}: split '{split}' has no shards (splits with shards: {have})")
    return s


def default_epoch_batches(manifest: dict[str, Any], split: str, batch_size: int, world_size: int) -> int:
    """Batches per rank in one virtual epoch: one pass over the split's samples across all ranks."""
    if batch_size < 1 or world_size < 1:
        raise ValueError(f"batch_size={batch_size} and world_size={world_size} must be >= 1")
    return max(1, split_entry(manifest, split)["samples"] // (batch_size * world_size))
