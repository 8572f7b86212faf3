"""Reading AudioSet's annotation files: class_labels_indices.csv and the *_segments.csv files -> ``Rows``.

The release's segments files: comment lines starting with '#' (the last one names the columns), then rows
``YTID, start_seconds, end_seconds, "label,label,..."`` with ', ' separators. Copies users have, all accepted:
the columns line without '#' and ',' separators (a re-saved copy), labels spread over unquoted columns with
stray spaces and trailing empty columns (a spreadsheet export), fractional starts (202.7). A spreadsheet also
turns ids starting with '-' into '#NAME?': such a row looks like a comment but has numbers after its id, so it
is read as a row and skipped with that reason, never dropped unseen. Rows with an unknown label, no label, a
bad id or bad times are skipped with the reason; a file whose rows carry no labels at all is refused.

class_labels_indices.csv: ``index,mid,display_name`` (display names with commas quoted); copies without the
header line, or with '_' for ' ' and the commas unquoted (TALNet's), are read too; the index must run 0..n-1.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

from ..labelled_clips import Entry, Rows, Segment, seconds, skip, youtube_id_problem

SPLIT_OF = {"eval": "test", "balanced_train": "train", "unbalanced_train": "train"}
"""AudioSet's file names (before ``_segments.csv``) -> split: both train files are train, eval is test."""


def read_class_index(path: str | Path) -> tuple[list[str], list[str]]:
    """-> (mids, display names) in index order; one ValueError naming the line for a malformed file."""
    path = Path(path)
    mids: list[str] = []
    names: list[str] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        for row in csv.reader(f):
            line = f"{path}:{len(mids) + 1}"
            if not row or not "".join(row).strip():
                continue
            if not mids and row[0].strip().lower() == "index":
                continue
            if len(row) < 3 or not row[0].strip().isdigit() or int(row[0]) != len(mids):
                raise ValueError(f"{line}: expected 'index,mid,display_name' with index {len(mids)}, got "
                                 f"{','.join(row)!r}; pass AudioSet's class_labels_indices.csv as --labels")
            mid = row[1].strip()
            if mid in mids:
                raise ValueError(f"{line}: label id {mid!r} appears twice; pass AudioSet's class_labels_indices.csv")
            mids.append(mid)
            names.append(",".join(row[2:]).strip())  # TALNet's copy leaves the commas of a name unquoted
    if len(mids) < 2:
        raise ValueError(f"{path}: found {len(mids)} classes; pass AudioSet's class_labels_indices.csv as --labels")
    return mids, names


def split_of(spec: str | Path) -> tuple[str, Path]:
    """``[SPLIT=]FILE`` -> (split, file): the split from AudioSet's file name unless given."""
    text = str(spec)
    split, eq, rest = text.partition("=")
    if eq and split in ("train", "test"):
        return split, Path(rest)
    stem = Path(text).name.removesuffix(".csv").removesuffix("_segments")
    if stem not in SPLIT_OF:
        raise ValueError(f"--segments {text}: cannot tell its split from the name (AudioSet's files are "
                         f"{', '.join(k + '_segments.csv' for k in SPLIT_OF)}); name it as train=FILE or test=FILE")
    return SPLIT_OF[stem], Path(text)


def _labels(fields: list[str]) -> list[str]:
    """The labels column, also when a spreadsheet spread it over several columns with quotes and spaces."""
    out = []
    for part in ",".join(fields).split(","):
        label = part.strip().strip('"').strip()
        if label and label not in out:
            out.append(label)
    return out


def _problem(seg: Segment, fields: list[str], known: dict[str, int],
             labels_name: str) -> tuple[str, str | None]:
    """(kind, why the row cannot be a sample) or ("", None)."""
    problem = youtube_id_problem(seg.id)
    if problem is not None:
        return "bad id", problem
    if seg.start < 0 or seg.end <= seg.start:
        return "bad times", f"start/end {fields[1:3]} are not seconds with end > start"
    if not seg.labels:
        return "no labels", "no positive_labels"
    unknown = [x for x in seg.labels if x not in known]
    if unknown:
        return "unknown label", f"label(s) {', '.join(unknown)} not in {labels_name}"
    return "", None


def read_segments(path: Path, known: dict[str, int], labels_name: str) -> tuple[list[Entry], dict[str, Any]]:
    """One segments file -> its rows in file order, and what was read (rows, comment lines, skip reasons)."""
    entries: list[Entry] = []
    info: dict[str, Any] = {"file": path.name, "rows": 0, "comment_lines": 0}
    kinds: Counter = Counter()
    labelled = 0
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, skipinitialspace=True)
        for fields in reader:
            fields = [x.strip() for x in fields]
            if not fields or not "".join(fields):
                continue
            first = fields[0]
            numbers = len(fields) >= 3 and seconds(fields[1]) is not None and seconds(fields[2]) is not None
            if first.startswith("#") and not numbers:
                info["comment_lines"] += 1
                continue
            if first.lstrip("# ").upper() == "YTID":
                info["comment_lines"] += 1  # the columns line of a copy re-saved without '#'
                continue
            where = f"{path.name}:{reader.line_num}"
            start = seconds(fields[1]) if len(fields) > 1 else None
            end = seconds(fields[2]) if len(fields) > 2 else None
            seg = Segment(first, start if start is not None else -1.0, end if end is not None else -1.0,
                          tuple(_labels(fields[3:])), where)
            info["rows"] += 1
            labelled += bool(seg.labels)
            kind, problem = _problem(seg, fields, known, labels_name)
            if problem is None:
                entries.append(seg)
            else:
                kinds[kind] += 1
                entries.append({**skip(seg, f"{where}: {problem}"), "start": start})
    if info["rows"] and not labelled:
        raise ValueError(f"{path}: none of its {info['rows']} rows has labels (the 4th column, positive_labels): "
                         f"this copy lost them; use AudioSet's own {path.name}")
    info["skipped"] = dict(sorted(kinds.items()))
    return entries, info


def read_audioset(segments: list[str | Path], labels: str | Path) -> Rows:
    """Every segments file (``[SPLIT=]FILE``) with the class index -> ``Rows`` (splits 'train', 'test')."""
    if not segments:
        raise ValueError("--segments: name at least one of AudioSet's *_segments.csv files")
    mids, names = read_class_index(labels)
    known = {m: i for i, m in enumerate(mids)}
    splits: dict[str, list[Entry]] = {}
    files = []
    for spec in segments:
        split, path = split_of(spec)
        if not path.is_file():
            raise FileNotFoundError(f"--segments {path}: no such file")
        entries, info = read_segments(path, known, Path(labels).name)
        splits.setdefault(split, []).extend(entries)
        files.append({**info, "split": split})
    ordered = {s: splits[s] for s in ("train", "test") if s in splits}
    return Rows(mids, names, True, ordered, {"labels_file": Path(labels).name, "segments_files": files})
