"""The AVE release's annotation files: ``Annotations.txt`` and ``{train,val,test}Set.txt``.

Each line is ``Category&VideoID&Quality&StartTime&EndTime``. What the real release holds, and how it is read:

* A header line ``Category&VideoID&Quality&StartTime&EndTime`` opens each file of the release; copies
  without it are common. It is recognised by its content (the five field names) as the first line of any
  file, never by position, so no data line is ever dropped.
* One video, several records: 45 video ids occur more than once (a video with two or three annotated
  events, one id three times), also across splits. Every record is its own sample with its own labels; the
  shard key (``Record.key``) tells them apart while ``id`` keeps the video id.
* A zero-duration record (``Church bell&VWi2ENBuTbw&good&0&0``): AVE's own label rule (event on seconds
  StartTime .. EndTime-1, background elsewhere) makes it all-background; it is kept that way, so the splits
  keep their 3,339 / 402 / 402 records, and the manifest notes it.
* Categories contain spaces, commas and parentheses; video ids may start with ``-`` and contain ``_``.

Any other malformed line is an error naming the file and line number: a silently dropped line would shift
a whole split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ...data.ids import excerpt, id_problem

SPLIT_FILES = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}
ANNOTATIONS = "Annotations.txt"
BACKGROUND = "background"
NUM_SEGMENTS = 10
HEADER_FIELDS = ("category", "videoid", "quality", "starttime", "endtime")

# YouTube ids and the like; no dots (WebDataset splits a member name at its first dot) and no slashes.
_ID = re.compile(r"[A-Za-z0-9_\-]+")
ID_SHAPE = "letters, digits, '-' or '_' (no dots)"


class AnnotationError(ValueError):
    """A malformed annotation or split file; the message names the file and the line."""


@dataclass(frozen=True)
class Clip:
    """One annotation record: a video id and one annotated event in it."""

    id: str
    category: str
    quality: str
    start: int
    end: int
    split: str = ""
    index: int = 0
    """Position of the record among its split file's data lines (0-based): fixes its key."""

    @property
    def key(self) -> str:
        """The record's sample key: unique across splits and records of one video, the same in every
        rebuild of the same files, no dots or slashes (WebDataset-safe)."""
        return f"{self.split}-{self.index:05d}-{self.id}"

    @property
    def zero_duration(self) -> bool:
        return self.start == self.end

    def labels(self, classes: list[str]) -> list[int]:
        """Per one-second segment: the event class while start <= i < end, else background (last)."""
        event, background = classes.index(self.category), classes.index(BACKGROUND)
        return [event if self.start <= i < self.end else background for i in range(NUM_SEGMENTS)]


def is_header(line: str) -> bool:
    return tuple(f.strip().lower() for f in line.split("&")) == HEADER_FIELDS


def parse_line(line: str, where: str) -> Clip:
    fields = line.split("&")
    if len(fields) != 5:
        raise AnnotationError(f"{where}: expected 5 '&'-separated fields "
                              f"(Category&VideoID&Quality&StartTime&EndTime), got {len(fields)}: {excerpt(line)}")
    category, vid, quality, start, end = (f.strip() for f in fields)
    if not category:
        raise AnnotationError(f"{where}: empty category in {excerpt(line)}")
    if category.lower() == BACKGROUND:
        raise AnnotationError(f"{where}: category '{category}' is reserved for segments outside the event")
    problem = id_problem(vid, name="video id", pattern=_ID, shape=ID_SHAPE)
    if problem:
        raise AnnotationError(f"{where}: {problem}")
    try:
        s, e = int(start), int(end)
    except ValueError:
        raise AnnotationError(f"{where}: StartTime/EndTime must be whole seconds, got {excerpt(start)}/"
                              f"{excerpt(end)}") from None
    if not 0 <= s <= e <= NUM_SEGMENTS:
        raise AnnotationError(f"{where}: need 0 <= StartTime <= EndTime <= {NUM_SEGMENTS}, got {s}..{e}")
    return Clip(vid, category, quality, s, e)


def read_annotation_file(path: Path, split: str = "") -> list[Clip]:
    """Every data line of ``path`` in file order; a first line holding the five field names is the header."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; an AVE root holds {ANNOTATIONS}, "
                                f"{', '.join(SPLIT_FILES.values())} and AVE/<VideoID>.mp4")
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a BOM
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text ({e})") from None
    clips: list[Clip] = []
    first = True
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if is_header(line):
            if not first:
                raise AnnotationError(f"{path}:{n}: a header line in the middle of the file; remove it")
            first = False
            continue
        first = False
        c = parse_line(line, f"{path}:{n}")
        clips.append(Clip(c.id, c.category, c.quality, c.start, c.end, split, len(clips)))
    return clips


def read_ave(root: str | Path) -> tuple[list[str], dict[str, list[Clip]]]:
    """-> (classes with background last, {split: records in file order})."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"AVE root '{root}' is not a folder; pass the folder holding {ANNOTATIONS}")
    categories = {c.category for c in read_annotation_file(root / ANNOTATIONS)}
    splits = {split: read_annotation_file(root / name, split) for split, name in SPLIT_FILES.items()}
    categories.update(c.category for clips in splits.values() for c in clips)
    return sorted(categories) + [BACKGROUND], splits
