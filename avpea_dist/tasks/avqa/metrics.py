"""MUSIC-AVQA accuracies as the benchmark reports them, and the majority-answer baseline.

Nine per-kind accuracies, the Audio / Visual / Audio-Visual averages and the overall average, every average
pooled over questions (correct / total of the group), as the reference ``test()`` prints them. Each answer is
scored with the type carried by its own question: the reference looks the type up by batch index in the test
file, which only works for batch size 1 on ``json/avqa-test.json`` itself.

Counts live in a fixed-order vector (``TypeAccuracy.counts``) so that ranks can sum them with one all-reduce.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from avpea_dist.datasets.musicavqa.release import QUESTION_TYPES, Question

SCENARIOS = ("Audio", "Visual", "Audio-Visual")
_SHORT = {"Audio": "audio", "Visual": "visual", "Audio-Visual": "audio_visual"}


def type_key(qtype: tuple[str, str] | Sequence[str]) -> str:
    """('Audio-Visual', 'Counting') -> 'audio_visual_counting'."""
    return f"{_SHORT[qtype[0]]}_{qtype[1].lower()}"


def _type_index(qtype: Sequence[str]) -> int:
    try:
        return QUESTION_TYPES.index((qtype[0], qtype[1]))
    except (ValueError, IndexError):
        raise ValueError(f"question type {tuple(qtype)!r} is not one of the nine (scenario, kind) pairs "
                         f"{QUESTION_TYPES}") from None


@dataclass
class TypeAccuracy:
    """Correct and total answers per question type, in QUESTION_TYPES order."""
    correct: list[int] = field(default_factory=lambda: [0] * len(QUESTION_TYPES))
    total: list[int] = field(default_factory=lambda: [0] * len(QUESTION_TYPES))

    def add(self, qtype: Sequence[str], is_correct: bool) -> None:
        i = _type_index(qtype)
        self.correct[i] += int(bool(is_correct))
        self.total[i] += 1

    def add_predictions(self, types: Sequence[Sequence[str]], predictions: Sequence[int],
                        labels: Sequence[int]) -> None:
        """Answer indices of a batch; a label outside the vocabulary (UNKNOWN_ANSWER) never matches."""
        if not len(types) == len(predictions) == len(labels):
            raise ValueError(f"{len(types)} types, {len(predictions)} predictions and {len(labels)} labels "
                             "must be one per question")
        for qtype, p, y in zip(types, predictions, labels):
            self.add(qtype, int(y) >= 0 and int(p) == int(y))

    @property
    def counts(self) -> list[int]:
        """correct then total, 18 integers: sum them across ranks, then ``from_counts``."""
        return [*self.correct, *self.total]

    @classmethod
    def from_counts(cls, counts: Sequence[int]) -> "TypeAccuracy":
        n = len(QUESTION_TYPES)
        if len(counts) != 2 * n:
            raise ValueError(f"expected {2 * n} counts (correct then total per type), got {len(counts)}")
        counts = [int(c) for c in counts]
        if any(c < 0 for c in counts) or any(c > t for c, t in zip(counts[:n], counts[n:])):
            raise ValueError(f"counts {counts} must be >= 0 with correct <= total per type")
        return cls(counts[:n], counts[n:])

    def merge(self, other: "TypeAccuracy") -> "TypeAccuracy":
        return TypeAccuracy.from_counts([a + b for a, b in zip(self.counts, other.counts)])

    def _pooled(self, members: Iterable[int]) -> float | None:
        members = list(members)
        total = sum(self.total[i] for i in members)
        return sum(self.correct[i] for i in members) / total if total else None

    def report(self) -> dict[str, float | None]:
        """Fractions: one per type ('audio_counting', ...), per scenario ('audio', 'visual', 'audio_visual')
        and 'overall'; None where a group has no question (never a made-up 0)."""
        out = {type_key(t): self._pooled([i]) for i, t in enumerate(QUESTION_TYPES)}
        for s in SCENARIOS:
            out[_SHORT[s]] = self._pooled(i for i, t in enumerate(QUESTION_TYPES) if t[0] == s)
        out["overall"] = self._pooled(range(len(QUESTION_TYPES)))
        return out

    def questions(self) -> dict[str, int]:
        """Questions scored per type and in all."""
        out = {type_key(t): self.total[i] for i, t in enumerate(QUESTION_TYPES)}
        out["overall"] = sum(self.total)
        return out


def majority_answers(train: Iterable[Question]) -> dict[tuple[str, str], str]:
    """The most frequent train answer of each question type (ties: the alphabetically first answer)."""
    per_type: dict[tuple[str, str], Counter] = {}
    for q in train:
        per_type.setdefault(q.type, Counter())[q.answer] += 1
    return {t: most_frequent(c) for t, c in per_type.items()}


def most_frequent(counts: Mapping[str, int]) -> str:
    """The answer with the highest count; ties go to the alphabetically first (independent of file order)."""
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def majority_baseline(majority: Mapping[tuple[str, str], str], questions: Iterable[Question]) -> TypeAccuracy:
    """Accuracy of answering each question with its type's majority train answer; a type train never had
    counts as wrong."""
    acc = TypeAccuracy()
    for q in questions:
        acc.add(q.type, majority.get(q.type) == q.answer)
    return acc


def majority_from_histograms(train: Mapping[tuple[str, str], Mapping[str, int]],
                             split: Mapping[tuple[str, str], Mapping[str, int]]) -> TypeAccuracy:
    """The majority baseline from answer histograms ({(scenario, kind): {answer: count}}, as the shard
    manifest keeps them per split): every question of ``split`` answered with its type's most frequent train
    answer; a type train never had counts as wrong."""
    correct, total = [], []
    for qtype in QUESTION_TYPES:
        counts = split.get(qtype, {})
        majority = most_frequent(train[qtype]) if train.get(qtype) else None
        correct.append(counts.get(majority, 0) if majority is not None else 0)
        total.append(sum(counts.values()))
    return TypeAccuracy.from_counts([*correct, *total])


def format_table(columns: Mapping[str, TypeAccuracy]) -> str:
    """A per-kind table in percent, one column per model (e.g. {'av_pea': ..., 'majority': ...})."""
    reports = {name: acc.report() for name, acc in columns.items()}
    keys = [type_key(t) for t in QUESTION_TYPES] + [_SHORT[s] for s in SCENARIOS] + ["overall"]
    width = max(len(k) for k in keys)
    lines = [" ".join([f"{'':<{width}}", *(f"{n:>12}" for n in reports)])]
    for k in keys:
        cells = ["-" if r[k] is None else f"{100 * r[k]:.2f}" for r in reports.values()]
        lines.append(" ".join([f"{k:<{width}}", *(f"{c:>12}" for c in cells)]))
    return "\n".join(lines)
