"""A video sample's questions -> the AVQA fields of a batch (contract 3).

A sample is one video with all its questions of one split (``json`` member: ``{"id", "key", "split",
"questions": [{"question_id", "question", "answer", "type": [scenario, kind]}]}``). The stream decodes the
video once; ``collate`` lays the questions of the batch's videos end to end and records, for each question,
the index of its video in the batch (``question_video``), so the head runs the encoder once per video and
every question reuses its video's tokens.

Batch fields: ``questions`` int64 (Q, L) word ids (0-padded), ``question_video`` int64 (Q,), ``answers``
int64 (Q,) (``UNKNOWN_ANSWER`` for an answer train never had: always counted wrong, left out of the loss),
``question_types`` list of (scenario, kind), ``question_ids`` list of int.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from avpea_dist.datasets.musicavqa.release import QUESTION_TYPES
from avpea_dist.datasets.musicavqa.vocab import Vocab

FIELDS = ("questions", "question_video", "answers", "question_types", "question_ids")


@dataclass(frozen=True)
class VideoQuestions:
    """One sample's parsed questions, in the sample's order."""
    tokens: tuple[tuple[int, ...], ...]
    answers: tuple[int, ...]
    types: tuple[tuple[str, str], ...]
    ids: tuple[int, ...]


@dataclass
class AVQACodec:
    """Plain attributes only: it is pickled into loader workers."""
    vocab: Vocab
    max_words: int
    """Question length L in word ids: min(the vocabulary's longest train question, avqa.max_question_words)."""

    def parse(self, meta: dict[str, Any], key: str) -> VideoQuestions:
        """Raises ValueError (the stream skips the sample and counts it) for anything malformed."""
        questions = meta.get("questions") if isinstance(meta, dict) else None
        if not isinstance(questions, list) or not questions:
            raise ValueError(f"sample '{key}': 'questions' must be a non-empty list, got {questions!r:.80}")
        tokens, answers, types, ids = [], [], [], []
        for i, q in enumerate(questions):
            where = f"sample '{key}' question {i}"
            if not isinstance(q, dict):
                raise ValueError(f"{where} is a {type(q).__name__}, not an object")
            qid, text, answer, qtype = (q.get(k) for k in ("question_id", "question", "answer", "type"))
            if isinstance(qid, bool) or not isinstance(qid, int):
                raise ValueError(f"{where}: question_id {qid!r} is not an integer")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{where}: question {text!r} is empty or not a string")
            if not isinstance(answer, str) or not answer:
                raise ValueError(f"{where}: answer {answer!r} is empty or not a string")
            if not isinstance(qtype, list) or tuple(qtype) not in QUESTION_TYPES:
                raise ValueError(f"{where}: type {qtype!r} is not one of the nine [scenario, kind] pairs")
            tokens.append(tuple(self.vocab.encode_question(text.split(" "))[:self.max_words]))
            answers.append(self.vocab.answer_label(answer))
            types.append((qtype[0], qtype[1]))
            ids.append(qid)
        return VideoQuestions(tuple(tokens), tuple(answers), tuple(types), tuple(ids))

    def collate(self, targets: list[VideoQuestions]) -> dict[str, Any]:
        video = [v for v, t in enumerate(targets) for _ in t.ids]
        tokens = [row for t in targets for row in t.tokens]
        return {
            "questions": torch.tensor(tokens, dtype=torch.int64).view(len(tokens), self.max_words),
            "question_video": torch.tensor(video, dtype=torch.int64),
            "answers": torch.tensor([a for t in targets for a in t.answers], dtype=torch.int64),
            "question_types": [ty for t in targets for ty in t.types],
            "question_ids": [i for t in targets for i in t.ids],
        }
