"""The AVE release's annotation files: ``Annotations.txt`` and ``{train,val,test}Set.txt``.

Each holds a header line, then ``Category&VideoID&Quality&StartTime&EndTime`` per clip. Categories contain
spaces, commas and parentheses; video ids may start with ``-`` and contain ``_``. A malformed line is an
error naming the file and line number: a silently dropped line would shift a whole split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SPLIT_FILES = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}
ANNOTATIONS = "Annotations.txt"
BACKGROUND = "background"
NUM_SEGMENTS = 10

# YouTube ids and the like; no dots (WebDataset splits a member name at its first dot) and no slashes.
_ID = re.compile(r"^[A-Za-z0-9_\-]+$")


class AnnotationError(ValueError):
    """A malformed annotation or split file; the message names the file and the line."""


@dataclass(frozen=True)
class Clip:
    id: str
    category: str
    quality: str
    start: int
    end: int
    split: str = ""

    def labels(self, classes: list[str]) -> list[int]:
        """Per one-second segment: the event class while start <= i < end, else background (last)."""
        event, background = classes.index(self.category), classes.index(BACKGROUND)
        return [event if self.start <= i < self.end else background for i in range(NUM_SEGMENTS)]


def parse_line(line: str, where: str) -> Clip:
    fields = line.split("&")
    if len(fields) != 5:
        raise AnnotationError(f"{where}: expected 5 '&'-separated fields "
                              f"(Category&VideoID&Quality&StartTime&EndTime), got {len(fields)}: {line!r}")
    category, vid, quality, start, end = (f.strip() for f in fields)
    if not category:
        raise AnnotationError(f"{where}: empty category in {line!r}")
    if category.lower() == BACKGROUND:
        raise AnnotationError(f"{where}: category '{category}' is reserved for segments outside the event")
    if not _ID.match(vid):
        raise AnnotationError(f"{where}: video id {vid!r} must be letters, digits, '-' or '_' (no dots)")
    try:
        s, e = int(start), int(end)
    except ValueError:
        raise AnnotationError(f"{where}: StartTime/EndTime must be whole seconds, got {start!r}/{end!r}") from None
    if not 0 <= s < e <= NUM_SEGMENTS:
        raise AnnotationError(f"{where}: need 0 <= StartTime < EndTime <= {NUM_SEGMENTS}, got {s}..{e}")
    return Clip(vid, category, quality, s, e)


def read_annotation_file(path: Path) -> list[Clip]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; an AVE root holds {ANNOTATIONS}, "
                                f"{', '.join(SPLIT_FILES.values())} and AVE/<VideoID>.mp4")
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a BOM
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text ({e})") from None
    clips = []
    for n, line in enumerate(text.splitlines(), start=1):
        if n == 1 or not line.strip():  # header, blank lines
            continue
        clips.append(parse_line(line.rstrip("\r"), f"{path}:{n}"))
    return clips


def read_ave(root: str | Path) -> tuple[list[str], dict[str, list[Clip]]]:
    """-> (classes with background last, {split: clips in file order})."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"AVE root '{root}' is not a folder; pass the folder holding {ANNOTATIONS}")
    categories = {c.category for c in read_annotation_file(root / ANNOTATIONS)}
    splits: dict[str, list[Clip]] = {}
    seen: dict[str, str] = {}
    for split, name in SPLIT_FILES.items():
        clips = []
        for clip in read_annotation_file(root / name):
            if clip.id in seen:
                raise AnnotationError(f"{root / name}: video id {clip.id!r} is also listed in {seen[clip.id]}; "
                                      f"a clip belongs to exactly one split")
            seen[clip.id] = name
            categories.add(clip.category)
            clips.append(Clip(clip.id, clip.category, clip.quality, clip.start, clip.end, split))
        splits[split] = clips
    classes = sorted(categories) + [BACKGROUND]
    return classes, splits
