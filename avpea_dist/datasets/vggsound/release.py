"""Reading VGGSound's annotation file ``vggsound.csv`` -> ``Rows``.

No header; rows ``youtube_id,start_seconds,label,split`` with split 'train' or 'test'; labels holding commas
are quoted ("female speech, woman speaking"). Every clip is 10 s from its start. A copy that lost the quotes
(the label's commas then split it over columns) is read back to the same label, since the split is always
the last column. Comment lines starting with '#' and a header line are passed over; a row with a bad id,
start or split is skipped with the reason (one whose split column is unreadable counts as a train row). Classes: every label of a well-formed row, sorted (the order the
VGGSound authors' class list uses), written exactly as in the file.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from ..labelled_clips import Entry, Rows, Segment, seconds, skip, youtube_id_problem

CLIP_SECONDS = 10.0
SPLITS = ("train", "test")


def read_vggsound(path: str | Path) -> Rows:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--csv {path}: no such file; pass VGGSound's vggsound.csv")
    splits: dict[str, list[Entry]] = {s: [] for s in SPLITS}
    kinds: Counter = Counter()
    rows = comments = 0
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        for fields in reader:
            if not fields or not "".join(fields).strip():
                continue
            first = fields[0].strip()
            start = seconds(fields[1]) if len(fields) > 1 else None
            if first.startswith("#") and start is None or (rows == 0 and start is None and len(fields) >= 4):
                comments += 1  # a comment, or a header line someone added
                continue
            rows += 1
            where = f"{path.name}:{reader.line_num}"
            split = fields[-1].strip() if len(fields) >= 4 else ""
            seg = Segment(first, start if start is not None else -1.0,
                          (start if start is not None else -1.0) + CLIP_SECONDS, (",".join(fields[2:-1]),), where)
            problem = youtube_id_problem(first)
            kind = "bad id"
            if problem is None and len(fields) < 4:
                kind, problem = "short row", f"{len(fields)} columns, expected youtube_id,start_seconds,label,split"
            elif problem is None and start is None:
                kind, problem = "bad start", f"start {fields[1]!r} is not a number of seconds"
            elif problem is None and split not in SPLITS:
                kind, problem = "bad split", f"split {split!r} is neither 'train' nor 'test'"
            elif problem is None and not seg.labels[0].strip():
                kind, problem = "no label", "empty label"
            if problem is None:
                splits[split].append(seg)
            else:
                kinds[kind] += 1
                splits[split if split in SPLITS else "train"].append({**skip(seg, f"{where}: {problem}"),
                                                                      "start": start})
    classes = sorted({e.labels[0] for entries in splits.values() for e in entries if isinstance(e, Segment)})
    if len(classes) < 2:
        raise ValueError(f"{path}: {len(classes)} labels found in {rows} rows; pass VGGSound's vggsound.csv "
                         f"(rows youtube_id,start_seconds,label,split)")
    annotations = {"csv_file": path.name, "rows": rows, "comment_lines": comments, "clip_seconds": CLIP_SECONDS,
                   "skipped": dict(sorted(kinds.items()))}
    return Rows(classes, list(classes), False, {s: v for s, v in splits.items() if v}, annotations)
