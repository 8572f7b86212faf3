"""The AVQA task plug-in (MUSIC-AVQA question answering): codec, AVST head, loss, metrics and baseline.

The shards hold one sample per video and split with all its questions (schema 'avqa', built by
``avpea shards build musicavqa`` or ``avpea shards synth musicavqa``); the manifest carries the train
vocabulary (question words and answers) and, per split, the answer histogram of each question type.

Training: answer cross-entropy over the batch's questions (+ ``avqa.match_weight`` times AVST's
frame-matching loss). Evaluation: the benchmark's nine per-kind accuracies, the Audio / Visual / Audio-Visual
averages and the overall average, pooled over questions (per-type counts summed over batches and ranks by
the trainer); the type of each answer is the one its own question carries. Model selection on val by 'overall'.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from avpea_dist.errors import ConfigError
from avpea_dist.tasks.avqa.codec import AVQACodec
from avpea_dist.tasks.avqa.metrics import TypeAccuracy, majority_from_histograms
from avpea_dist.datasets.musicavqa.release import PAD, QUESTION_TYPES, UNK
from avpea_dist.datasets.musicavqa.vocab import Vocab
from avpea_dist.tasks.base import EvalPart, Task, TaskLoss, to_device

if TYPE_CHECKING:
    import torch
    from torch import nn

BUILD_HINT = ("build AVQA shards with `avpea shards build musicavqa --json-dir DIR --videos DIR --out DIR` "
              "(or `avpea shards synth musicavqa`) and point data.shards at them")


class AVQATask(Task):
    name = "avqa"
    schema = "avqa"
    selection_metric = "overall"
    metric_label = "overall accuracy"

    def __init__(self, cfg: Any, manifest: dict[str, Any] | None) -> None:
        super().__init__(cfg, manifest)
        self.vocab = read_vocab(manifest, cfg.data.shards) if manifest is not None else None

    def _need_vocab(self) -> Vocab:
        if self.vocab is None:
            raise ConfigError(f"task avqa takes its question and answer vocabularies from the shards' manifest; "
                              f"data.shards={self.cfg.data.shards!r} was not read: point it at the AVQA shards "
                              f"the run was trained on")
        return self.vocab

    def codec(self, split: str, epoch: int) -> AVQACodec:
        vocab = self._need_vocab()
        return AVQACodec(vocab, min(vocab.max_len, self.cfg.avqa.max_question_words))

    def build_head(self, embed_dim: int, streams: tuple[str, ...]) -> "nn.Module":
        from avpea_dist.tasks.avqa.head import AVQAHeadConfig, AVQATaskHead

        vocab, a = self._need_vocab(), self.cfg.avqa
        return AVQATaskHead(AVQAHeadConfig(dim=embed_dim, vocab_size=len(vocab.words),
                                           num_answers=len(vocab.answers), hidden=a.hidden, word_dim=a.word_dim,
                                           heads=a.heads, dropout=a.dropout, match_weight=a.match_weight,
                                           standardise=a.standardise))

    def loss(self, outputs: Any, batch: dict[str, Any]) -> TaskLoss:
        from avpea_dist.tasks.avqa.head import avqa_loss

        answers = batch["answers"].to(outputs.logits.device)
        loss = avqa_loss(outputs, answers, self.cfg.avqa.match_weight)
        hits = (outputs.logits.detach().argmax(-1) == answers) & (answers >= 0)
        return TaskLoss(loss, hits.sum(), int(answers.numel()))

    def eval_batch(self, model: "nn.Module", batch: dict[str, Any], device: "torch.device") -> EvalPart:
        import torch
        import torch.nn.functional as F

        logits = model(to_device(batch, device, model.streams)).logits.float().cpu()
        answers = batch["answers"]
        known = answers >= 0
        acc = TypeAccuracy()
        acc.add_predictions(batch["question_types"], logits.argmax(-1).tolist(), answers.tolist())
        loss = (F.cross_entropy(logits[known], answers[known], reduction="sum").double() if bool(known.any())
                else torch.zeros((), dtype=torch.float64))
        # unknown: questions whose answer train never had (always wrong, left out of the loss)
        return EvalPart(sums={"type_counts": torch.tensor(acc.counts, dtype=torch.float64), "loss": loss,
                              "known": known.sum().double(), "unknown": (~known).sum().double()})

    def eval_reduce(self, split: str, sums: dict[str, "torch.Tensor"], rows: dict[str, "torch.Tensor"],
                    items: dict[str, list]) -> dict[str, Any]:
        acc = TypeAccuracy.from_counts([round(c) for c in sums["type_counts"].tolist()])
        known, loss_sum = sums["known"].item(), sums["loss"].item()
        return {**acc.report(), "loss": loss_sum / known if known else None, "questions": sum(acc.total),
                "unknown_answers": int(sums["unknown"].item()), "questions_per_type": acc.questions(),
                "type_counts": acc.counts}

    def signature(self) -> dict[str, Any]:
        """The head's sizes and objective and the vocabulary (its digest): a resume must keep them."""
        a = self.cfg.avqa
        sig: dict[str, Any] = {f"avqa.{k}": getattr(a, k) for k in
                               ("hidden", "word_dim", "heads", "dropout", "match_weight", "standardise", "max_question_words")}
        if self.vocab is not None:
            text = json.dumps(self.vocab.to_json(), sort_keys=True).encode()
            sig["avqa.vocab"] = hashlib.sha256(text).hexdigest()[:16]
        return sig

    def baselines(self, split: str) -> dict[str, Any]:
        """The majority train answer of each question type, scored on ``split`` from the manifest's answer
        histograms (a type train never had counts as wrong)."""
        if self.manifest is None:
            return {}
        train = answer_histogram(self.manifest, "train")
        acc = majority_from_histograms(train, answer_histogram(self.manifest, split))
        return {**acc.report(), "questions": sum(acc.total), "questions_per_type": acc.questions(),
                "type_counts": acc.counts}

    @classmethod
    def example_manifest(cls, cfg: Any, folder: Any) -> dict[str, Any]:
        return example_manifest()

    def example_meta(self, index: int) -> dict[str, Any]:
        return example_meta(index)


def read_vocab(manifest: dict[str, Any], shards: str) -> Vocab:
    """The manifest's vocabulary, after checking that the shards are AVQA shards."""
    schema = manifest.get("schema", "avel")
    if schema != "avqa":
        raise ConfigError(f"task avqa needs shards of schema 'avqa', but data.shards={shards!r} holds schema "
                          f"{schema!r}; {BUILD_HINT}")
    if "vocab" not in manifest:
        raise ConfigError(f"data.shards={shards!r}: the manifest has no 'vocab' (question words and answers); "
                          f"{BUILD_HINT}")
    try:
        vocab = Vocab.from_json(manifest["vocab"])
    except (ValueError, TypeError) as e:
        raise ConfigError(f"data.shards={shards!r}: the manifest's 'vocab' is unusable ({e}); {BUILD_HINT}") from None
    if len(vocab.answers) < 2:
        raise ConfigError(f"data.shards={shards!r}: the train split has {len(vocab.answers)} distinct answer(s); "
                          f"a classifier needs at least 2")
    return vocab


def answer_histogram(manifest: dict[str, Any], split: str) -> dict[tuple[str, str], dict[str, int]]:
    """``splits.<split>.answer_histogram`` ({"<scenario>/<kind>": {answer: count}}) keyed by (scenario, kind)."""
    raw = manifest.get("splits", {}).get(split, {}).get("answer_histogram")
    if not isinstance(raw, dict):
        raise ValueError(f"the shard manifest has no answer_histogram for split '{split}'; {BUILD_HINT}")
    out: dict[tuple[str, str], dict[str, int]] = {}
    for key, counts in raw.items():
        qtype = tuple(str(key).rsplit("/", 1))
        if qtype not in QUESTION_TYPES or not isinstance(counts, dict):
            raise ValueError(f"answer_histogram of split '{split}': entry {key!r} is not '<scenario>/<kind>' of "
                             f"one of the nine types with {{answer: count}}")
        out[qtype] = {str(a): int(c) for a, c in counts.items()}
    return out


# -- Examples for the shipped-config test (tasks/base.py): a small vocabulary and questions drawn from it --

_EXAMPLE_QUESTIONS = (
    (("Audio", "Counting"), "How many instruments can be heard in the video", ("zero", "one", "two")),
    (("Visual", "Location"), "Where is the violin", ("left", "middle", "right")),
    (("Audio-Visual", "Existential"), "Is the piano in the video always playing", ("yes", "no")),
    (("Audio-Visual", "Temporal"), "Where is the first sounding instrument", ("left", "middle", "right")),
)


def example_manifest() -> dict[str, Any]:
    words = sorted({w for _, text, _ in _EXAMPLE_QUESTIONS for w in text.split(" ")})
    answers = sorted({a for *_, options in _EXAMPLE_QUESTIONS for a in options})
    longest = max(len(text.split(" ")) for _, text, _ in _EXAMPLE_QUESTIONS)
    return {"schema": "avqa", "vocab": Vocab((PAD, UNK, *words), tuple(answers), longest).to_json(), "splits": {}}


def example_meta(index: int) -> dict[str, Any]:
    """Video ``index`` with one to three of the example questions (answers vary with the index)."""
    questions = []
    for j in range(1 + index % 3):
        qtype, text, options = _EXAMPLE_QUESTIONS[(index + j) % len(_EXAMPLE_QUESTIONS)]
        answer = options[(index + j) % len(options)]
        questions.append({"question_id": 10 * index + j, "question": text, "answer": answer, "type": list(qtype)})
    return {"id": f"{index:08d}", "split": "train", "questions": questions}

