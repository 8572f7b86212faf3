"""Finding the video file of an annotated segment by a name pattern (``--video-pattern``).

Users keep downloaded segments under the names their download tool gave them: ``{id}_{start:06d}.mp4``
(VGGSound's own), ``{id}_{start}_{end}.mp4``, ``Y{id}.mp4`` (AudioSet tools), ``{id}.mp4`` (whole videos). A
pattern is a ``str.format`` template over ``id`` (verbatim), ``start`` and ``end`` (seconds: an int when whole,
else a float), ``start_ms`` and ``end_ms`` (ints); it may name sub-folders. When the named file is absent, a
file with the same name before its extension and any other extension is taken (a downloader may have left a
.webm or .mkv): the container is PyAV's business, and a file it cannot open is skipped at decoding with the
reason. Partial downloads and side files (``.part``, ``.ytdl``, ``.json`` ...) are never taken.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

from .videos import VIDEO_SUFFIXES

FIELDS = ("id", "start", "end", "start_ms", "end_ms")
NOT_MEDIA = frozenset({"part", "ytdl", "tmp", "temp", "json", "txt", "description", "jpg", "jpeg", "png", "webp",
                       "vtt", "srt", "lock"})
_RANK = {suffix[1:]: rank for rank, suffix in enumerate(VIDEO_SUFFIXES)}


def _seconds(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def check_pattern(pattern: str) -> str:
    """The pattern, or one ValueError naming the bad field and the ones allowed."""
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as e:
        raise ValueError(f"--video-pattern {pattern!r} is not a valid pattern ({e})") from None
    bad = [n for n in names if n.split(".")[0].split("[")[0] not in FIELDS]
    if bad or "id" not in names:
        raise ValueError(f"--video-pattern {pattern!r}: it must use {{id}}, and may use only "
                         f"{', '.join('{' + f + '}' for f in FIELDS)} (got {', '.join(map(repr, bad)) or 'no {id}'})")
    if pattern.startswith("/") or ".." in Path(pattern).parts:
        raise ValueError(f"--video-pattern {pattern!r} must name a file under --videos (no absolute path, no '..')")
    return pattern


def format_name(pattern: str, video_id: str, start: float, end: float) -> str:
    """The relative file name ``pattern`` gives a segment; ValueError when it cannot name it (e.g. ``{start:06d}``
    for a segment starting at 202.7 s)."""
    try:
        return pattern.format(id=video_id, start=_seconds(start), end=_seconds(end),
                              start_ms=int(round(start * 1000)), end_ms=int(round(end * 1000)))
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise ValueError(f"--video-pattern {pattern!r} cannot name the segment at {start:g}-{end:g} s ({e})") from None


def has_suffix(pattern: str) -> bool:
    """Whether the names ``pattern`` gives end in a literal extension (``.mp4`` after the last field)."""
    tail = pattern.rpartition("}")[2] if "}" in pattern else pattern
    return "." in tail.rpartition("/")[2]


def _stem(name: str) -> str:
    stem, dot, _ = name.rpartition(".")
    return stem if dot else name


class VideoFolder:
    """The files under ``root``, listed once per folder a pattern reaches (a folder of 2 million downloads is
    listed once, not stat-ed per segment)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"--videos {self.root} is not a folder; pass the folder holding the videos")
        self._listed: dict[Path, tuple[set[str], dict[str, list[str]]]] = {}

    def _listing(self, folder: Path) -> tuple[set[str], dict[str, list[str]]]:
        if folder not in self._listed:
            names: set[str] = set()
            stems: dict[str, list[str]] = {}
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.is_file():
                            names.add(entry.name)
                            suffix = entry.name.rpartition(".")[2].lower()
                            if "." in entry.name and suffix not in NOT_MEDIA:
                                stems.setdefault(_stem(entry.name), []).append(entry.name)
            except (FileNotFoundError, NotADirectoryError):
                pass
            for found in stems.values():  # the releases' own container first, then a stable order
                found.sort(key=lambda n: (_RANK.get(n.rpartition(".")[2].lower(), len(_RANK)), n))
            self._listed[folder] = (names, stems)
        return self._listed[folder]

    def find(self, name: str, suffixed: bool = True) -> Path | None:
        """The file ``name`` (relative to the root), else one with the same stem and another extension; None.
        ``suffixed``: ``name`` ends in an extension (else all of it is the stem: ``{id}_{start}`` at 202.7 s)."""
        path = self.root / name
        names, stems = self._listing(path.parent)
        if path.name in names:
            return path
        candidates = stems.get(_stem(path.name) if suffixed else path.name, [])
        return path.parent / candidates[0] if candidates else None
