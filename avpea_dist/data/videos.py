"""Finding a record's video: one rule for every builder and for ``avpea predict``.

Releases name videos by id; the files are ``<id>.mp4`` in the release, but download tools leave other
containers (``<id>.webm``, ``<id>.mkv``). The rule: in the video folder, the file named ``<id>`` plus a suffix of
``VIDEO_SUFFIXES`` (any case), the earliest suffix of that list winning; an entry that is not a file (a folder
named like a video) only when no file matches, so that it is reported as 'not a file'; with none at all, the
``<id>.mp4`` path (then reported as a missing file). ``stamp`` is what a rerun compares to notice that a
video was added, replaced or removed since a shard was built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")
"""Looked for in this order: the releases ship mp4; a download tool may have left another container."""
_SUFFIX_RANK = {suffix: rank for rank, suffix in enumerate(VIDEO_SUFFIXES)}


def video_paths(folder: str | Path, ids: Iterable[str]) -> dict[str, str]:
    """{id: its video in ``folder``} by the rule above; the folder is listed once, however many ids."""
    folder = Path(folder)
    best: dict[str, tuple[int, int, str]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, _, suffix = entry.name.rpartition(".")
            rank = _SUFFIX_RANK.get(f".{suffix.lower()}")
            if not stem or rank is None:
                continue
            try:
                not_file = 0 if entry.is_file() else 1  # follows symlinks: a link to a video is a video
            except OSError:
                not_file = 1
            if stem not in best or (not_file, rank) < best[stem][:2]:
                best[stem] = (not_file, rank, entry.name)
    return {i: str(folder / (best[i][2] if i in best else f"{i}.mp4")) for i in ids}


def find_video(folder: str | Path, video_id: str) -> Path:
    """The video of one id by the same rule (``avpea predict`` and one-off lookups)."""
    return Path(video_paths(folder, [video_id])[video_id])


def stamp(path: str | Path) -> list | None:
    """What identifies a video's content cheaply: [file name, size, mtime_ns]; ['name', 'not a file'] for
    something else under that name; None when nothing is there. Named by file name, not full path, so that a
    release folder moved or given by another path keeps its finished shards."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return [path.name, "not a file"]
    return [path.name, st.st_size, st.st_mtime_ns]
