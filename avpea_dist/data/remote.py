"""Shard folders to and from object storage: ``avpea shards upload LOCAL URL``, ``download URL LOCAL``, and the
upload half of ``shards build --out s3://...`` (the build itself runs in a local staging folder).

The order keeps a reader from ever seeing a manifest that names a missing or partial shard: an upload that
finds an earlier, different build at the URL removes its ``index.json`` (the readers' "complete" marker) and
``manifest.json`` first; then the shards go up (S3 makes an object visible only once all of it arrived, large
ones in multipart pieces), then every other file of the folder (a text model folder), then ``index/*.npz``,
``manifest.json`` and ``index.json`` last. Each shard is checked against the manifest's sha256 before it
leaves, and carries its sha256 as object metadata; a rerun (after a kill) skips every shard already there with
that hash and size, so it uploads only what is missing. A download hashes each shard as it streams and
refuses one that differs from the manifest (nothing half-written is left: ``fileio.atomic_open``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from .. import storage
from ..fileio import atomic_open, atomic_write_bytes, sha256_file
from .manifest import MANIFEST, read_manifest
from .tario import ShardFile

INDEX = "index.json"
INDEX_DIR = "index"
SKIP_DIRS = ("parts", ".decoded", "submitit")
"""Build records and job folders: the build's own, never uploaded."""
SHA_KEY = "sha256"


def _shards(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [sh for s in manifest["splits"].values() for sh in s["shards"]]


def _others(local: Path, shard_names: set[str]) -> list[str]:
    """Files of the folder besides the shards, the build records and the markers (relative, '/'-separated)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(local):
        rel_dir = os.path.relpath(dirpath, local)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and d != INDEX_DIR and not d.startswith(".")]
        for name in filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
            if name.startswith(".") or rel in shard_names or rel in (MANIFEST, INDEX):
                continue
            out.append(rel)
    return sorted(out)


def upload(local: str | Path, url: str, say: Callable[[str], None] = lambda line: None) -> dict[str, int]:
    """Upload the finished shard folder ``local`` to ``url`` (``s3://bucket/prefix``); -> counts."""
    local = Path(local)
    if not storage.url_writable(url):
        raise ValueError(f"cannot upload to {storage.redact(url)}: uploads go to s3://bucket/prefix URLs")
    manifest = read_manifest(local)
    shards = _shards(manifest)
    remote_manifest = _remote_text(storage.join(url, MANIFEST))
    if remote_manifest is not None and remote_manifest != (local / MANIFEST).read_bytes():
        # another build is there: readers must stop trusting it before any of its shards change
        storage.remove(storage.join(url, INDEX))
        storage.remove(storage.join(url, MANIFEST))
        say(f"{storage.redact(url)} held another build: its index.json and manifest.json were removed first")
    present = storage.listdir(url)
    stats = {"uploaded": 0, "skipped": 0, "bytes": 0}
    for sh in shards:
        target = storage.join(url, sh["file"])
        if present.get(sh["file"]) == sh["bytes"] and storage.object_metadata(target).get(SHA_KEY) == sh["sha256"]:
            stats["skipped"] += 1
            continue
        path = local / sh["file"]
        if not path.is_file() or sha256_file(path) != sh["sha256"]:
            raise ValueError(f"{path} is missing or differs from its manifest entry (sha256); nothing more is "
                             f"uploaded: check the folder with `avpea shards verify {local}` and rebuild it")
        storage.put_file(str(path), target, {SHA_KEY: sh["sha256"]})
        stats["uploaded"] += 1
        stats["bytes"] += sh["bytes"]
        say(f"uploaded {sh['file']} ({sh['bytes'] / 1e6:.1f} MB)")
    for rel in _others(local, {sh["file"] for sh in shards}):
        storage.put_file(str(local / rel), storage.join(url, rel))
    for npz in sorted((local / INDEX_DIR).glob("*.npz")) if (local / INDEX_DIR).is_dir() else []:
        storage.put_file(str(npz), storage.join(url, INDEX_DIR, npz.name))
    storage.put_file(str(local / MANIFEST), storage.join(url, MANIFEST))
    if (local / INDEX).is_file():
        storage.put_file(str(local / INDEX), storage.join(url, INDEX))
    return stats


def _remote_text(url: str) -> bytes | None:
    try:
        return storage.read_bytes(url)
    except FileNotFoundError:
        return None


def download(url: str, local: str | Path, say: Callable[[str], None] = lambda line: None) -> dict[str, int]:
    """Copy the shard folder at ``url`` into ``local`` (new, empty, or an earlier copy of it), each shard
    verified against the manifest's sha256 as it streams; -> counts."""
    local = Path(local)
    manifest = read_manifest(url)
    manifest_bytes = storage.read_bytes(storage.join(url, MANIFEST))
    if local.exists() and any(local.iterdir()) and not (local / MANIFEST).is_file():
        raise ValueError(f"{local} holds files that are not a shard folder; download into a new folder")
    local.mkdir(parents=True, exist_ok=True)
    if (local / MANIFEST).is_file() and (local / MANIFEST).read_bytes() != manifest_bytes:
        for marker in (INDEX, MANIFEST):  # the local copy is of another build: not complete until the end
            (local / marker).unlink(missing_ok=True)
    stats = {"downloaded": 0, "skipped": 0, "bytes": 0}
    shards = _shards(manifest)
    for sh in shards:
        path = local / sh["file"]
        if path.is_file() and path.stat().st_size == sh["bytes"] and sha256_file(path) == sh["sha256"]:
            stats["skipped"] += 1
            continue
        source = storage.join(url, sh["file"])
        with atomic_open(path, "wb") as out, ShardFile(source, hashing=True) as f:
            while block := f.read(8 << 20):
                out.write(block)
            digest = f.hexdigest_to_end()
            if digest != sh["sha256"]:
                raise ValueError(f"{storage.redact(source)}: sha256 differs from the manifest (changed or damaged "
                                 f"in the store); not written. Upload the folder again")
        stats["downloaded"] += 1
        stats["bytes"] += sh["bytes"]
        say(f"downloaded {sh['file']} ({sh['bytes'] / 1e6:.1f} MB)")
    listed = storage.listdir_recursive(url)  # {} over HTTP: only the shards and the markers are known there
    names = {sh["file"] for sh in shards}
    for rel in sorted(listed):
        top = rel.split("/", 1)[0]
        if rel in names or rel in (MANIFEST, INDEX) or top in SKIP_DIRS or top == INDEX_DIR:
            continue
        atomic_write_bytes(local / rel, storage.read_bytes(storage.join(url, rel)))
    index = _remote_text(storage.join(url, INDEX))
    if index is not None:
        for split in json.loads(index).get("splits", {}).values():
            rel = split["file"]
            atomic_write_bytes(local / rel, storage.read_bytes(storage.join(url, rel)))
    atomic_write_bytes(local / MANIFEST, manifest_bytes)
    if index is not None:
        atomic_write_bytes(local / INDEX, index)
    return stats
