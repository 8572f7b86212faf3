"""The readers' compact index of a finished shard build: ``index.json`` and ``index/<split>.npz``.

``manifest.json`` is the build's full record (every skip with its reason, resume records): at 2 million
records it is ~100 MB of JSON, too much for every rank to parse. Readers load this index instead, once per
process: per split the shard names, sample counts, sizes and hashes, the byte offset of every sample (so a
reader can fetch exactly one sample's bytes, locally or by a ranged request) and, when the release gives
labels, each sample's class indices (CSR, for balanced sampling).

``index.json`` also carries the manifest's described form (``describe``; ``"manifest"``: what training ranks and tasks
read of it, a few kB at any size). A finished build writes ``index/<split>.npz`` for every split, then
``manifest.json``, then ``index.json`` LAST: ``index.json`` is the readers' "build complete" marker, and a build that starts rebuilding shards
removes it first. ``index.json`` names each split's npz with its size and sha256: a reader checks the size
(and the zip's CRC-32 of every array as it reads it), ``shards verify`` the sha256. Folders built before the index existed have no ``index.json``: readers then fall
back to ``manifest.json`` (without per-sample offsets; the caller walks tar headers).

The npz holds (``numpy.load(allow_pickle=False)``): ``files`` (str, shard names relative to the root),
``counts``/``bytes`` (int64 per shard), ``sha256`` (str per shard, '' when unknown), ``offsets`` (int64 per
sample: byte offset of its first tar header, samples in manifest order), ``data_end`` (int64 per shard: where
the last sample's bytes end, before the tar trailer) and, optionally, ``label_ptr`` (int64, samples + 1) with
``label_ids`` (int32). It is written with fixed zip timestamps, so equal builds give equal bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .. import plugins, storage
from ..fileio import atomic_open
from .manifest import (FIX, INDEX, INDEX_DIR, LEGACY_SCHEMA, MANIFEST, RECORD_KEYS, describe,  # noqa: F401
                       read_manifest, split_entry)

FORMAT = "avpea-index"
VERSION = 1
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest zip date: the npz bytes depend on the arrays alone
_REBUILD = ("rerun the same `avpea shards build` command (it reuses every finished shard and rewrites the index)")


class Labels(NamedTuple):
    """Class indices of every sample, CSR: sample i has ``ids[ptr[i]:ptr[i + 1]]``."""

    ptr: np.ndarray
    ids: np.ndarray

    def of(self, sample: int) -> np.ndarray:
        return self.ids[self.ptr[sample]:self.ptr[sample + 1]]


@dataclass
class SplitIndex:
    """One split of a shard folder as readers need it. ``header`` is ``index.json`` (or, for a folder built
    before the index, the manifest); ``offsets``/``data_end`` are None for such a folder."""

    root: str
    split: str
    header: dict[str, Any]
    files: list[str]
    counts: np.ndarray
    bytes: np.ndarray
    sha256: list[str | None]
    offsets: np.ndarray | None
    data_end: np.ndarray | None
    starts: np.ndarray
    """The first sample number of each shard (``counts``' exclusive cumulative sum)."""
    labels: Labels | None

    @property
    def samples(self) -> int:
        return int(self.counts.sum())

    def span(self, shard: int, pos: int) -> tuple[int, int] | None:
        """Byte range ``[start, end)`` of sample ``pos`` of shard ``shard``; None without offsets."""
        if self.offsets is None or self.data_end is None:
            return None
        if not 0 <= pos < self.counts[shard]:
            raise IndexError(f"sample {pos} of shard {self.files[shard]}, which holds {int(self.counts[shard])}")
        i = int(self.starts[shard]) + pos
        end = self.data_end[shard] if pos + 1 == self.counts[shard] else self.offsets[i + 1]
        return int(self.offsets[i]), int(end)

    def url(self, shard: int) -> str:
        """Where shard ``shard`` is: a path under a local root, or ``<root>/<file>`` under a URL root."""
        if "://" in self.root:
            return f"{self.root.rstrip('/')}/{self.files[shard]}"
        return os.path.join(self.root, self.files[shard])


# ---------------------------------------------------------------------------------------------
# Writing (by the builder, when every shard of the plan has a record)


def tar_layout(path: str | Path) -> tuple[list[str], list[int], int]:
    """-> (sample keys, offset of each sample's first header, where the last sample's bytes end), from tar
    headers alone (a local path or a URL: data is sought over): for shards whose build record predates recorded
    offsets, and for `shards verify`."""
    from .tario import ShardFile

    keys: list[str] = []
    offsets: list[int] = []
    end = 0
    with ShardFile(str(path)) as f, tarfile.open(fileobj=f, mode="r:") as tar:
        for info in tar:
            key = info.name.split(".", 1)[0]
            if not keys or keys[-1] != key:
                keys.append(key)
                offsets.append(info.offset)
            end = info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    return keys, offsets, end


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for name, a in arrays.items():
            with z.open(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME), "w", force_zip64=True) as m:
                np.lib.format.write_array(m, np.ascontiguousarray(a), allow_pickle=False)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _split_arrays(out: Path, shards: list[dict[str, Any]], by_file: dict[str, dict[str, Any]]) -> dict[str, Any]:
    offsets: list[np.ndarray] = []
    data_end: list[int] = []
    labels: list[list[int]] | None = []
    for sh in shards:
        rec = by_file.get(sh["file"], {})
        if rec.get("offsets") is None or rec.get("data_end") is None:
            _, offs, end = tar_layout(out / sh["file"])
        else:
            offs, end = rec["offsets"], rec["data_end"]
        if len(offs) != sh["samples"]:
            raise ValueError(f"{out / sh['file']}: {len(offs)} samples in the tar, the build record says "
                             f"{sh['samples']}; {_REBUILD}")
        offsets.append(np.asarray(offs, dtype=np.int64))
        data_end.append(int(end))
        ids = rec.get("label_ids")
        if labels is not None and ids is not None and len(ids) == sh["samples"]:
            labels += ids
        else:
            labels = None  # a record without labels (the release gives none): no CSR for the split
    arrays: dict[str, Any] = {
        "files": np.array([sh["file"] for sh in shards], dtype=str),
        "counts": np.array([sh["samples"] for sh in shards], dtype=np.int64),
        "bytes": np.array([sh["bytes"] for sh in shards], dtype=np.int64),
        "sha256": np.array([sh.get("sha256") or "" for sh in shards], dtype=str),
        "offsets": np.concatenate(offsets) if offsets else np.zeros(0, np.int64),
        "data_end": np.array(data_end, dtype=np.int64)}
    if labels is not None and shards:
        arrays["label_ptr"] = np.concatenate([[0], np.cumsum([len(x) for x in labels])]).astype(np.int64)
        arrays["label_ids"] = np.array([c for x in labels for c in x], dtype=np.int32)
    return arrays


def write_split_indexes(out: Path, manifest: dict[str, Any], records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Write ``index/<split>.npz`` for every split of ``manifest`` from the shards' build ``records`` (which
    carry ``RECORD_KEYS``; a record without offsets has them read from its tar's headers) -> the body of
    ``index.json``, for the caller to write after the manifest."""
    by_file = {rec["file"]: rec for rec in records.values() if rec.get("file")}
    body: dict[str, Any] = {"format": FORMAT, "version": VERSION, "schema": manifest.get("schema", LEGACY_SCHEMA),
                            "preprocessing": manifest["preprocessing"], "manifest": describe(manifest)}
    if "classes" in manifest:
        body["classes"] = manifest["classes"]
    body["splits"] = {}
    for split, s in manifest["splits"].items():
        rel = f"{INDEX_DIR}/{split}.npz"
        _write_npz(out / rel, _split_arrays(out, s["shards"], by_file))
        body["splits"][split] = {"samples": s["samples"], "shards": len(s["shards"]), "file": rel,
                                 "sha256": _sha256(out / rel), "bytes": (out / rel).stat().st_size}
    return body


def withdraw(out: Path) -> None:
    """A build about to rewrite shards: readers must not take the old index for a finished build."""
    (out / INDEX).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Reading (once per process per folder and split)

_LOADED: dict[tuple[str, str], tuple[tuple[int, int, int], SplitIndex]] = {}


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def load_index(root: str | Path, split: str) -> SplitIndex:
    """The index of ``split`` under ``root``; loaded once per process (reloaded only when ``index.json`` or,
    for an old folder, ``manifest.json`` is replaced: one stat per call). Errors name the file and the fix."""
    root_s = str(root)
    if storage.is_url(root_s):  # s3:// or http(s)://: read once per process (no stat to watch a replacement)
        cached = _LOADED.get((root_s, split))
        if cached is not None:
            return cached[1]
        indexed = storage.exists(storage.join(root_s, INDEX))
        index = _read_index(root_s, split) if indexed else _from_manifest(root_s, split)
        _LOADED[(root_s, split)] = ((0, 0, 0), index)
        return index
    marker = Path(root_s) / INDEX
    if not marker.is_file():
        marker = Path(root_s) / MANIFEST
    try:
        stamp = _stamp(marker)
    except OSError:
        stamp = (0, 0, 0)  # no manifest either: read_manifest below says so
    cached = _LOADED.get((root_s, split))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    index = _read_index(root_s, split) if marker.name == INDEX else _from_manifest(root_s, split)
    _LOADED[(root_s, split)] = (stamp, index)
    return index


def _bad(path: Path, what: str) -> ValueError:
    return ValueError(f"{path}: {what}; {_REBUILD}, or {FIX}")


def _header(path: Path | str) -> dict[str, Any]:
    try:
        h = json.loads(storage.read_bytes(str(path)))
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad(path, f"not valid JSON ({e})") from None
    if not isinstance(h, dict) or h.get("format") != FORMAT:
        raise _bad(path, f'not an avpea shard index (no "format": "{FORMAT}")')
    if h.get("version") != VERSION:
        raise _bad(path, f"index version {h.get('version')!r}; this code reads {VERSION}")
    known = plugins.schemas()
    if h.get("schema") not in known:
        raise _bad(path, f"'schema' is {h.get('schema')!r}; this code reads {', '.join(map(repr, known))}")
    if not isinstance(h.get("preprocessing"), dict) or not isinstance(h["preprocessing"].get("frame_size"), int):
        raise _bad(path, "'preprocessing.frame_size' is missing")
    if not isinstance(h.get("splits"), dict):
        raise _bad(path, "'splits' is missing")
    return h


def _read_index(root: str, split: str) -> SplitIndex:
    path: Path | str = storage.join(root, INDEX) if storage.is_url(root) else Path(root) / INDEX
    h = _header(path)
    entry = h["splits"].get(split)
    if not isinstance(entry, dict) or not entry.get("shards"):
        have = ", ".join(k for k, v in h["splits"].items() if isinstance(v, dict) and v.get("shards")) or "none"
        raise ValueError(f"{path}: split '{split}' has no shards (splits with shards: {have})")
    npz: Path | str = (storage.join(root, str(entry.get("file", ""))) if storage.is_url(root)
                       else Path(root) / str(entry.get("file", "")))
    try:
        data = storage.read_bytes(str(npz))  # one read (a request when remote), then checked in memory
    except (FileNotFoundError, IsADirectoryError):
        raise _bad(npz, f"missing (index.json lists it for split '{split}')") from None
    # Start-up is per rank and must stay under a second at 2M records: the size is checked here and every
    # array's bytes by the zip's CRC-32 as numpy reads them; the sha256 (a second pass) is `shards verify`'s.
    if len(data) != entry.get("bytes"):
        raise _bad(npz, "does not match its size in index.json (changed after the build)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:  # a CRC mismatch included
        raise _bad(npz, f"unreadable ({e})") from None
    need = ("files", "counts", "bytes", "sha256", "offsets", "data_end")
    if any(k not in a for k in need):
        raise _bad(npz, f"lacks arrays {[k for k in need if k not in a]}")
    files, counts = a["files"].tolist(), np.asarray(a["counts"], dtype=np.int64)
    n = len(files)
    if not (len(counts) == len(a["bytes"]) == len(a["sha256"]) == len(a["data_end"]) == n == entry["shards"]) \
            or int(counts.sum()) != entry.get("samples") or len(a["offsets"]) != entry.get("samples") \
            or (counts < 1).any() or any("/" in f or f.startswith(".") for f in files):
        raise _bad(npz, f"inconsistent shard or sample counts for split '{split}'")
    labels = None
    if "label_ptr" in a and "label_ids" in a:
        ptr, ids = np.asarray(a["label_ptr"], dtype=np.int64), np.asarray(a["label_ids"], dtype=np.int32)
        if len(ptr) != len(a["offsets"]) + 1 or ptr[0] != 0 or ptr[-1] != len(ids) or (ptr[1:] < ptr[:-1]).any():
            raise _bad(npz, "label_ptr does not index label_ids")
        labels = Labels(ptr, ids)
    return SplitIndex(root, split, h, files, counts, np.asarray(a["bytes"], dtype=np.int64),
                      [x or None for x in a["sha256"].tolist()], np.asarray(a["offsets"], dtype=np.int64),
                      np.asarray(a["data_end"], dtype=np.int64), _starts(counts), labels)


def _from_manifest(root: str, split: str) -> SplitIndex:
    """A folder built before the index: what the manifest lists, without per-sample offsets or labels."""
    m = read_manifest(root)
    s = split_entry(m, split, storage.join(root, MANIFEST) if storage.is_url(root) else Path(root) / MANIFEST)
    counts = np.array([int(sh["samples"]) for sh in s["shards"]], dtype=np.int64)
    return SplitIndex(root, split, m, [str(sh["file"]) for sh in s["shards"]], counts,
                      np.array([int(sh.get("bytes", 0)) for sh in s["shards"]], dtype=np.int64),
                      [sh.get("sha256") or None for sh in s["shards"]], None, None, _starts(counts), None)


def _starts(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
