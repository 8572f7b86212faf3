"""Question-word and answer vocabularies, built from the train split only and sorted (the reference code keeps
first-seen order, which changes with the file order). Val/test words outside the vocabulary become ``<unk>``;
val/test answers outside it get the label ``UNKNOWN_ANSWER``, which no prediction equals: counted as wrong."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from avpea_dist.datasets.musicavqa.release import PAD, UNK, UNKNOWN_ANSWER, Question


@dataclass(frozen=True)
class Vocab:
    words: tuple[str, ...]  # PAD (index 0), UNK (index 1), then the train words sorted
    answers: tuple[str, ...]  # train answers sorted; a label is an index into this
    max_len: int  # the longest train question in words; shorter ones are padded to it

    def __post_init__(self) -> None:
        if self.words[:2] != (PAD, UNK):
            raise ValueError(f"vocabulary words must start with {PAD!r}, {UNK!r}; got {self.words[:2]}")
        if len(set(self.words)) != len(self.words) or len(set(self.answers)) != len(self.answers):
            raise ValueError("vocabulary words and answers must be unique")
        if self.max_len < 1 or not self.answers:
            raise ValueError("a vocabulary needs max_len >= 1 and at least one answer")

    @cached_property
    def _word_index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    @cached_property
    def _answer_index(self) -> dict[str, int]:
        return {a: i for i, a in enumerate(self.answers)}

    def encode_question(self, words: Iterable[str]) -> list[int]:
        """Token ids padded with PAD at the end, as the reference code does (the LSTM reads the padding)."""
        index = self._word_index
        ids = [index.get(w, 1) for w in words]
        if len(ids) > self.max_len:
            # Longer than every train question: keep the first max_len words, the question's start names its kind.
            ids = ids[:self.max_len]
        return ids + [0] * (self.max_len - len(ids))

    def encode_questions(self, questions: Iterable[Question]) -> list[list[int]]:
        return [self.encode_question(q.words) for q in questions]

    def answer_label(self, answer: str) -> int:
        """Index of the answer, or UNKNOWN_ANSWER when train never had it."""
        return self._answer_index.get(answer, UNKNOWN_ANSWER)

    def to_json(self) -> dict[str, Any]:
        """For the manifest."""
        return {"words": list(self.words), "answers": list(self.answers), "max_len": self.max_len}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "Vocab":
        try:
            return cls(tuple(obj["words"]), tuple(obj["answers"]), int(obj["max_len"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"manifest vocabulary needs 'words', 'answers' and 'max_len' ({e})") from None


def build_vocab(train: Iterable[Question]) -> Vocab:
    """From the train questions: every word and answer seen, sorted."""
    train = list(train)
    if not train:
        raise ValueError("cannot build a vocabulary from an empty train split")
    words = sorted({w for q in train for w in q.words} - {PAD, UNK})
    answers = sorted({q.answer for q in train})
    return Vocab((PAD, UNK, *words), tuple(answers), max(len(q.words) for q in train))
