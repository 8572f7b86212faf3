"""Helpers that damage copies of shard folders the way disks, copies and buggy writers do."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Callable

from avpea_dist.data.tario import RawSample, iter_raw_samples
from avpea_dist.fileio import sha256_file


def copy_shards(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rewrite_shard(shards: Path, name: str, edit: Callable[[int, RawSample], list[tuple[str, bytes]]]) -> None:
    """Rewrite one shard with ``edit(i, sample) -> [(suffix, bytes), ...]`` and re-seal the manifest (so only
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
