"""The MUSIC-AVQA release's question files, read as published.

``avqa-{train,val,test}.json`` (in the original ``json/`` and the corrected ``json_update/`` folders) are each
a list of records with exactly the keys of ``KEYS``. Quirks of the release, all handled here:

- ``type`` and ``templ_values`` are JSON *strings* holding a list (``"[\\"Audio\\", \\"Counting\\"]"``);
- the answer key is spelt ``anser``;
- ``question_content`` is a template with ``<Object>``, ``<LR>``, ... placeholders, ending in ``?`` or in the
  full-width ``？``, sometimes followed by a space;
- video ids are 8 digits for real videos, a prefix (``sa``, ``va``, ``eva``, ``vv``, ``esa``, ``evv``) and
  8 digits for synthetic ones; the release splits by question, so one video occurs in several splits;
- ``json/`` holds question ids that occur twice with different answers (``json_update/`` keeps one answer).

Each record becomes a ``Question`` or a ``Skip`` with its reason; per split, questions + skipped == records.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...data.ids import excerpt, id_problem

SPLITS = ("train", "val", "test")
KEYS = ("video_id", "question_id", "type", "question_content", "templ_values", "question_deleted", "anser")
# (scenario, kind) in the order the benchmark reports them.
QUESTION_TYPES: tuple[tuple[str, str], ...] = (
    ("Audio", "Counting"), ("Audio", "Comparative"),
    ("Visual", "Counting"), ("Visual", "Location"),
    ("Audio-Visual", "Existential"), ("Audio-Visual", "Counting"), ("Audio-Visual", "Location"),
    ("Audio-Visual", "Comparative"), ("Audio-Visual", "Temporal"),
)
SYNTHETIC_PREFIXES = ("sa", "va", "eva", "vv", "esa", "evv")
QUESTION_MARKS = ("?", "\uff1f")  # the full-width one ends ~5% of the release's questions
PAD, UNK = "<pad>", "<unk>"
UNKNOWN_ANSWER = -1  # label of an answer outside the train vocabulary: never predicted, so always wrong

# Becomes part of a tar key downstream: no dots (WebDataset splits a member name there) and no slashes.
_VIDEO_ID = re.compile(r"[A-Za-z0-9_\-]+")
_RELEASE_VIDEO_ID = re.compile(r"^(?:" + "|".join(SYNTHETIC_PREFIXES) + r")?[0-9]{8}$")


class ReleaseError(ValueError):
    """A question file that cannot be read at all (missing, not JSON, not a list); the message names it."""


@dataclass(frozen=True)
class Question:
    question_id: int
    video_id: str
    words: tuple[str, ...]  # the filled question, token by token, as the reference code splits it
    answer: str
    type: tuple[str, str]  # (scenario, kind), one of QUESTION_TYPES
    split: str = ""

    @property
    def question(self) -> str:
        return " ".join(self.words)

    def to_json(self) -> dict[str, Any]:
        """The entry of a video sample's ``questions`` list."""
        return {"question_id": self.question_id, "question": self.question, "answer": self.answer,
                "type": list(self.type)}


@dataclass(frozen=True)
class Skip:
    index: int  # position of the record in its file
    video_id: str  # "" when the record has none usable
    question_id: int | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``skipped`` entry."""
        return {"id": self.video_id, "question_id": self.question_id, "reason": self.reason}


@dataclass(frozen=True)
class SplitQuestions:
    split: str
    records: int
    questions: tuple[Question, ...]
    skipped: tuple[Skip, ...]


def video_kind(video_id: str) -> str:
    """'real' (8 digits), 'synthetic' (a release prefix and 8 digits) or 'other' (not a release id)."""
    if not _RELEASE_VIDEO_ID.match(video_id):
        return "other"
    return "real" if video_id[0].isdigit() else "synthetic"


def fill_question(template: str, values: list[str]) -> tuple[str, ...]:
    """The reference code's filling: strip the end, split on single spaces, drop the last character of the
    last token (its question mark), replace each token holding '<' by the next value, in order.
    Raises ValueError (the skip reason) where the reference code would crash or silently mangle the text."""
    words = template.rstrip().split(" ")
    if not words[-1] or words[-1][-1] not in QUESTION_MARKS:
        raise ValueError(f"question_content {excerpt(template)} does not end with '?' or '\uff1f'")
    words[-1] = words[-1][:-1]
    slots = [i for i, w in enumerate(words) if "<" in w]
    if len(slots) != len(values):
        raise ValueError(f"{len(slots)} placeholders in {excerpt(template)} but {len(values)} templ_values "
                         f"{excerpt(values)}")
    for i, value in zip(slots, values):
        words[i] = value
    if "" in words:
        raise ValueError(f"question {excerpt(template)} filled with {excerpt(values)} has an empty word "
                         f"(double space?)")
    return tuple(words)


def _json_list(record: dict, key: str) -> list[str]:
    """A release field that holds a JSON string of a list of strings (an already decoded list is accepted)."""
    raw = record[key]
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError(f"{key} {excerpt(raw)} is not a JSON list") from None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{key} {excerpt(raw)} is not a list of non-empty strings")
    return value


def _question_type(record: dict) -> tuple[str, str]:
    value = _json_list(record, "type")
    if tuple(value) not in QUESTION_TYPES:
        raise ValueError(f"type {excerpt(record['type'])} is not one of the nine (scenario, kind) pairs")
    return value[0], value[1]


def _check_fields(record: dict) -> None:
    missing = [k for k in KEYS if k not in record]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}")
    vid, qid = record["video_id"], record["question_id"]
    problem = id_problem(vid, pattern=_VIDEO_ID, shape="letters, digits, '-' or '_'")
    if problem:
        raise ValueError(problem)
    if isinstance(qid, bool) or not isinstance(qid, int):
        raise ValueError(f"question_id {excerpt(qid)} is not an integer")
    if record["question_deleted"] != 0:
        raise ValueError(f"question_deleted is {excerpt(record['question_deleted'])} (only 0 is kept)")
    if not isinstance(record["question_content"], str) or not record["question_content"].strip():
        raise ValueError("question_content is empty or not a string")
    if not isinstance(record["anser"], str) or not record["anser"].strip():
        raise ValueError(f"anser {excerpt(record['anser'])} is empty or not a string")


def parse_record(record: Any, index: int, split: str = "") -> Question | Skip:
    """One release record -> a Question, or a Skip naming what is wrong with it."""
    if not isinstance(record, dict):
        return Skip(index, "", None, f"record is a {type(record).__name__}, not an object")
    vid = record.get("video_id") if isinstance(record.get("video_id"), str) else ""
    qid = record.get("question_id") if type(record.get("question_id")) is int else None
    try:
        _check_fields(record)
        qtype = _question_type(record)
        words = fill_question(record["question_content"], _json_list(record, "templ_values"))
    except ValueError as e:
        return Skip(index, vid, qid, str(e))
    return Question(qid, vid, words, record["anser"], qtype, split)


def _drop_duplicates(parsed: list[Question | Skip]) -> list[Question | Skip]:
    """A question id occurring more than once: identical copies keep the first; copies that disagree (``json/``
    has such pairs, differing in their answer) are all skipped, since no one answer can be trusted."""
    seen: dict[int, list[int]] = {}
    for i, p in enumerate(parsed):
        if isinstance(p, Question):
            seen.setdefault(p.question_id, []).append(i)
    out = list(parsed)
    for qid, where in seen.items():
        if len(where) < 2:
            continue
        first = parsed[where[0]]
        agree = all(parsed[i] == first for i in where)
        for i in (where[1:] if agree else where):
            q = parsed[i]
            reason = (f"duplicate of record {where[0]} (question_id {qid})" if agree else
                      f"question_id {qid} occurs {len(where)} times with different content "
                      f"(answers {sorted({parsed[j].answer for j in where})}); the corrected json_update/ keeps one")
            out[i] = Skip(i, q.video_id, qid, reason)
    return out


def load_records(path: str | Path) -> list[Any]:
    path = Path(path)
    if not path.is_file():
        raise ReleaseError(f"{path} is missing; a MUSIC-AVQA json folder holds avqa-train.json, "
                           "avqa-val.json and avqa-test.json")
    try:
        records = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReleaseError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(records, list):
        raise ReleaseError(f"{path}: expected a JSON list of question records, got {type(records).__name__}")
    return records


def parse_split(records: list[Any], split: str) -> SplitQuestions:
    parsed = _drop_duplicates([parse_record(r, i, split) for i, r in enumerate(records)])
    questions = tuple(p for p in parsed if isinstance(p, Question))
    skipped = tuple(p for p in parsed if isinstance(p, Skip))
    assert len(questions) + len(skipped) == len(records)
    return SplitQuestions(split, len(records), questions, skipped)


def read_split(json_dir: str | Path, split: str) -> SplitQuestions:
    """``<json_dir>/avqa-<split>.json`` -> its questions and skips."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    return parse_split(load_records(Path(json_dir) / f"avqa-{split}.json"), split)


def read_release(json_dir: str | Path) -> dict[str, SplitQuestions]:
    """All three splits of a ``json/`` or ``json_update/`` folder."""
    return {split: read_split(json_dir, split) for split in SPLITS}


def group_by_video(questions: tuple[Question, ...] | list[Question]) -> dict[str, list[Question]]:
    """{video_id: its questions}, videos and questions in file order: one sample per video and split."""
    videos: dict[str, list[Question]] = {}
    for q in questions:
        videos.setdefault(q.video_id, []).append(q)
    return videos


def shared_videos(release: dict[str, SplitQuestions]) -> dict[tuple[str, str], int]:
    """{(split_a, split_b): videos with questions in both}, for every pair of splits read."""
    ids = {s: {q.video_id for q in sq.questions} for s, sq in release.items()}
    names = list(ids)
    return {(a, b): len(ids[a] & ids[b]) for i, a in enumerate(names) for b in names[i + 1:]}
