"""Helpers that damage copies of shard folders the way disks, copies and buggy writers do."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Callable

import numpy as np

from avpea_dist.data.index import INDEX, tar_layout
from avpea_dist.data.tario import RawSample, iter_raw_samples
from avpea_dist.fileio import sha256_file


def copy_shards(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rewrite_shard(shards: Path, name: str, edit: Callable[[int, RawSample], list[tuple[str, bytes]]]) -> None:
    """Rewrite one shard with ``edit(i, sample) -> [(suffix, bytes), ...]`` and re-seal the manifest and index (so only
    the loaders' own checks can notice the damage)."""
    path = shards / name
    samples = list(iter_raw_samples(path))
    with open(path, "wb") as f:
        tar = tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT)
        for i, raw in enumerate(samples):
            for suffix, data in edit(i, raw):
                info = tarfile.TarInfo(f"{raw.key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        tar.close()
    reseal(shards, name)


def reseal(shards: Path, name: str) -> None:
    m = json.loads((shards / "manifest.json").read_text())
    for s in m["splits"].values():
        for sh in s["shards"]:
            if sh["file"] == name:
                sh["sha256"], sh["bytes"] = sha256_file(shards / name), (shards / name).stat().st_size
    (shards / "manifest.json").write_text(json.dumps(m))
    if (shards / INDEX).is_file():
        _reseal_index(shards, name)


def _reseal_index(shards: Path, name: str) -> None:
    """The readers' index too: the shard's size and hash, and its samples' offsets where its headers still
    read (a shard cut short keeps its old offsets, as a copy damaged after the build would)."""
    index = json.loads((shards / INDEX).read_text())
    for entry in index["splits"].values():
        with np.load(shards / entry["file"], allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        hits = np.flatnonzero(a["files"] == name)
        if not len(hits):
            continue
        s = int(hits[0])
        a["sha256"][s], a["bytes"][s] = sha256_file(shards / name), (shards / name).stat().st_size
        try:
            _, offsets, end = tar_layout(shards / name)
        except (tarfile.TarError, OSError):
            offsets = None
        if offsets is not None and len(offsets) == a["counts"][s]:
            start = int(a["counts"][:s].sum())
            a["offsets"][start:start + len(offsets)], a["data_end"][s] = offsets, end
        with open(shards / entry["file"], "wb") as f:
            np.savez(f, **a)
        entry["sha256"], entry["bytes"] = sha256_file(shards / entry["file"]), (shards / entry["file"]).stat().st_size
    (shards / INDEX).write_text(json.dumps(index))


def cut_at_member(path: Path, member_index: int) -> None:
    """Truncate a tar exactly at the header of member ``member_index``: tar readers see a clean, short file."""
    with tarfile.open(path) as tar:
        offset = tar.getmembers()[member_index].offset
    with open(path, "r+b") as f:
        f.truncate(offset)


def cut_mid_member(path: Path, member_index: int) -> None:
    with tarfile.open(path) as tar:
        info = tar.getmembers()[member_index]
    with open(path, "r+b") as f:
        f.truncate(info.offset_data + info.size // 2)
