"""The VALOR-32K annotation files, read as published, in either of the release's two layouts.

- ``desc_{train,val,test}.json`` (the VALOR-32K annotation download): each a list of
  ``{"video_id": "<youtube id>_<start>.000_<end>.000", "desc": "<caption>"}``. In the real files: 25,327 /
  3,500 / 3,491 records, one caption per video, no video in two splits, ids of 11 YouTube characters
  (``-`` and ``_`` included, 537 train ids start with ``-``) then the clip's start and end seconds with three
  decimals (so ids hold dots), clips of 2-10 s (~1% shorter than 10 s), some captions without a final full
  stop, a few with non-ASCII characters (full-width comma, accents).
- VALOR's own training files: ``txt_mapper_en.json`` ``{video_id: caption or [captions]}`` with
  ``train_id.json`` / ``test_id.json`` (lists of ids; ``val_id.json`` when present). VALOR itself selects on
  test; here val is ``val_id.json`` when the folder has one, else a seeded hold-out of the train ids
  (``val_fraction`` of them, recorded in the manifest as ``val_from``).

Ids are never parsed apart. One record = one (video id, caption). Per split, records of one video are
gathered in file order; a record is skipped with its reason when it is not an object, lacks a key, has an
empty or non-string caption or an unusable id, or repeats an earlier (id, caption) exactly (written once,
skipped once). Per split, captions kept + skipped == records.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...data.ids import excerpt, id_problem

SPLITS = ("train", "val", "test")
DESC_FILES = {split: f"desc_{split}.json" for split in SPLITS}
MAPPER, ID_FILES = "txt_mapper_en.json", {"train": "train_id.json", "val": "val_id.json", "test": "test_id.json"}


class ReleaseError(ValueError):
    """An annotation file that cannot be read at all (missing, not JSON, wrong shape); the message names it."""


@dataclass(frozen=True)
class SplitCaptions:
    split: str
    records: int
    videos: dict[str, list[str]]
    """{video id: its captions}, videos and captions in file order."""
    skipped: list[dict[str, Any]]
    """{"id", "reason"} per record not kept."""


def _load(path: Path, kind: type, what: str) -> Any:
    if not path.is_file():
        raise ReleaseError(f"{path} is missing; {what}")
    try:
        value = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReleaseError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(value, kind):
        raise ReleaseError(f"{path}: expected a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def _id_problem(vid: Any) -> str | None:
    """Why ``vid`` cannot name a video file (None when it can): the shared rule, no pattern (VALOR's ids hold
    dots); any other character is kept verbatim."""
    return id_problem(vid)


def gather(split: str, pairs: list[tuple[Any, Any, str | None]]) -> SplitCaptions:
    """(video id, caption, problem or None) records in file order -> the split's videos and skips."""
    videos: dict[str, list[str]] = {}
    first: dict[tuple[str, str], int] = {}
    skipped = []
    for n, (vid, caption, problem) in enumerate(pairs):
        problem = problem or _id_problem(vid)
        if problem is None and (not isinstance(caption, str) or not caption.strip()):
            problem = f"caption {excerpt(caption)} is empty or not a string"
        if problem is None:
            caption = caption.strip()
            if (vid, caption) in first:
                problem = f"exact duplicate of record {first[vid, caption]} (same video_id and caption)"
            else:
                first[vid, caption] = n
                videos.setdefault(vid, []).append(caption)
                continue
        skipped.append({"id": vid if isinstance(vid, str) else "", "reason": problem})
    assert sum(map(len, videos.values())) + len(skipped) == len(pairs)
    return SplitCaptions(split, len(pairs), videos, skipped)


def _desc_pairs(records: list[Any]) -> list[tuple[Any, Any, str | None]]:
    pairs = []
    for r in records:
        if not isinstance(r, dict):
            pairs.append(("", None, f"record is a {type(r).__name__}, not an object"))
            continue
        missing = ", ".join(k for k in ("video_id", "desc") if k not in r)
        pairs.append((r.get("video_id", ""), r.get("desc"), f"missing key(s) {missing}" if missing else None))
    return pairs


def read_desc(ann_dir: Path) -> dict[str, SplitCaptions]:
    """The ``desc_{train,val,test}.json`` layout."""
    what = f"a VALOR-32K annotation folder holds {', '.join(DESC_FILES.values())}"
    return {split: gather(split, _desc_pairs(_load(ann_dir / name, list, what))) for split, name in DESC_FILES.items()}


def hold_out(ids: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """(train ids, val ids): a seeded ``fraction`` of the distinct ids (at least one when there are two or
    more), each list in file order; every record of a held-out id goes to val."""
    distinct = list(dict.fromkeys(i for i in ids if isinstance(i, str)))
    n = min(len(distinct) - 1, max(1, round(fraction * len(distinct)))) if len(distinct) > 1 else 0
    import numpy as np  # here: `avpea --help` builds this dataset's parser from this module

    rng = np.random.default_rng([seed, zlib.crc32(b"val")])
    val = {distinct[i] for i in rng.permutation(len(distinct))[:n]}
    held = [isinstance(i, str) and i in val for i in ids]
    return [i for i, h in zip(ids, held) if not h], [i for i, h in zip(ids, held) if h]


def _mapper_pairs(ids: list[Any], mapper: dict[str, Any]) -> list[tuple[Any, Any, str | None]]:
    pairs: list[tuple[Any, Any, str | None]] = []
    for vid in ids:
        if not isinstance(vid, str) or vid not in mapper:
            pairs.append((vid, None, _id_problem(vid) or f"video_id {excerpt(vid)} has no entry in {MAPPER}"))
            continue
        captions = mapper[vid]
        for caption in captions if isinstance(captions, list) and captions else [captions]:
            pairs.append((vid, caption, None))
    return pairs


def read_mapper(ann_dir: Path, val_fraction: float, seed: int) -> tuple[dict[str, SplitCaptions], dict[str, Any]]:
    """VALOR's ``txt_mapper_en.json`` + ``{train,test}_id.json`` (+ ``val_id.json``) layout; -> (splits, how
    val was formed)."""
    what = f"VALOR's layout holds {MAPPER}, {ID_FILES['train']} and {ID_FILES['test']}"
    mapper = _load(ann_dir / MAPPER, dict, what)
    ids = {split: _load(ann_dir / ID_FILES[split], list, what) for split in ("train", "test")}
    if (ann_dir / ID_FILES["val"]).is_file():
        ids["val"] = _load(ann_dir / ID_FILES["val"], list, what)
        val_from = {"source": ID_FILES["val"]}
    else:
        ids["train"], ids["val"] = hold_out(ids["train"], val_fraction, seed)
        val_from = {"source": f"seeded hold-out of {ID_FILES['train']}", "fraction": val_fraction, "seed": seed,
                    "videos": len(set(i for i in ids["val"] if isinstance(i, str)))}
    return {split: gather(split, _mapper_pairs(ids[split], mapper)) for split in SPLITS}, val_from


def read_release(ann_dir: str | Path, *, val_fraction: float = 0.1,
                 seed: int = 0) -> tuple[dict[str, SplitCaptions], dict[str, Any]]:
    """Either layout of ``ann_dir`` -> ({split: captions}, {"layout", "val_from"})."""
    ann_dir = Path(ann_dir)
    if not ann_dir.is_dir():
        raise ReleaseError(f"--ann-dir {ann_dir} is not a folder; pass the folder holding desc_train.json "
                           f"(or {MAPPER})")
    if not 0 < val_fraction < 1:
        raise ValueError(f"--val-fraction={val_fraction} must lie in (0, 1)")
    if (ann_dir / DESC_FILES["train"]).is_file():
        return read_desc(ann_dir), {"layout": "desc", "val_from": {"source": DESC_FILES["val"]}}
    if (ann_dir / MAPPER).is_file():
        splits, val_from = read_mapper(ann_dir, val_fraction, seed)
        return splits, {"layout": "txt_mapper", "val_from": val_from}
    raise ReleaseError(f"{ann_dir} holds neither {DESC_FILES['train']} (VALOR-32K's desc_*.json) nor {MAPPER} "
                       f"(VALOR's own files)")
