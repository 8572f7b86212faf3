"""The AVQA task plug-in: its codec on samples made from the real release excerpt, its checks of the shard
manifest, the majority baseline from the manifest's answer histograms, and the head on an encoder's output."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from avpea_dist.config import Config
from avpea_dist.errors import ConfigError
from avpea_dist.tasks.avqa.codec import AVQACodec
from avpea_dist.tasks.avqa.metrics import majority_answers, majority_baseline
from avpea_dist.datasets.musicavqa.release import PAD, QUESTION_TYPES, UNK, UNKNOWN_ANSWER, group_by_video, read_split
from avpea_dist.tasks.avqa.task import AVQATask
from avpea_dist.train.evaluate import evaluate_task
from avpea_dist.datasets.musicavqa.vocab import build_vocab

UPDATE = Path(__file__).parent / "fixtures" / "musicavqa" / "json_update"
ORIGINAL = UPDATE.parent / "json"


def release():
    train = read_split(ORIGINAL, "train").questions
    return train, read_split(UPDATE, "test").questions


def samples(questions) -> list[dict]:
    """The json members the shard builder writes: one per video, all its questions."""
    return [{"id": vid, "key": f"test-{i:05d}-{vid}", "split": "test", "questions": [q.to_json() for q in qs]}
            for i, (vid, qs) in enumerate(group_by_video(questions).items())]


def histogram(questions) -> dict:
    out: dict = {}
    for q in questions:
        by_answer = out.setdefault(f"{q.type[0]}/{q.type[1]}", {})
        by_answer[q.answer] = by_answer.get(q.answer, 0) + 1
    return out


def manifest(train, test, **changes) -> dict:
    m = {"schema": "avqa", "vocab": build_vocab(train).to_json(),
         "splits": {"train": {"answer_histogram": histogram(train)}, "test": {"answer_histogram": histogram(test)}}}
    m.update(changes)
    return m


def avqa_config(**avqa) -> Config:
    cfg = Config(task="avqa")
    for k, v in avqa.items():
        setattr(cfg.avqa, k, v)
    return cfg


def test_codec_encodes_every_question_of_every_video_with_the_train_vocabulary():
    train, test = release()
    task = AVQATask(avqa_config(), manifest(train, test))
    vocab, codec = task.vocab, task.codec("test", 0)
    metas = samples(test)
    batch = codec.collate([codec.parse(m, m["key"]) for m in metas])
    flat = [(v, q) for v, m in enumerate(metas) for q in m["questions"]]
    assert len(flat) == len(test) > len(metas)  # several questions per video in the excerpt
    assert batch["question_video"].tolist() == [v for v, _ in flat]
    assert batch["question_ids"] == [q["question_id"] for _, q in flat]
    assert batch["question_types"] == [tuple(q["type"]) for _, q in flat]
    assert batch["questions"].shape == (len(flat), vocab.max_len) and batch["questions"].dtype == torch.int64
    for row, (_, q) in zip(batch["questions"].tolist(), flat):
        words = q["question"].split(" ")[:vocab.max_len]
        assert row[:len(words)] == [vocab.words.index(w) if w in vocab.words else 1 for w in words]
        assert row[len(words):] == [0] * (vocab.max_len - len(words))
    # test answers train never had get UNKNOWN_ANSWER (always wrong), the others their index
    answers = batch["answers"].tolist()
    for a, (_, q) in zip(answers, flat):
        assert a == (vocab.answers.index(q["answer"]) if q["answer"] in vocab.answers else UNKNOWN_ANSWER)
    assert UNKNOWN_ANSWER in answers and any(a >= 0 for a in answers)
    assert vocab.words[:2] == (PAD, UNK) and 1 in batch["questions"]  # words train never had: <unk>


def test_codec_cuts_questions_at_max_question_words_and_collates_nothing():
    train, test = release()
    codec = AVQATask(avqa_config(max_question_words=3), manifest(train, test)).codec("train", 0)
    meta = samples(test)[0]
    parsed = codec.parse(meta, meta["key"])
    assert all(len(t) == 3 for t in parsed.tokens)
    empty = codec.collate([])
    assert empty["questions"].shape == (0, 3) and empty["question_video"].shape == (0,)
    assert empty["question_types"] == [] and empty["answers"].shape == (0,)
    assert pickle_roundtrip(codec).parse(meta, meta["key"]) == parsed  # loader workers get a pickled copy


def pickle_roundtrip(obj):
    """What a loader worker receives: the object must pickle; its state comes back through the same
    ``__reduce_ex__`` path (copied, not unpickled: the source scan allows no ``pickle.loads``)."""
    import copy
    import pickle
    pickle.dumps(obj)
    return copy.deepcopy(obj)


@pytest.mark.parametrize("meta, reason", [
    ({"id": "x", "key": "k"}, "'questions' must be a non-empty list"),
    ({"questions": []}, "'questions' must be a non-empty list"),
    ({"questions": "[{}]"}, "'questions' must be a non-empty list"),
    ({"questions": [["q"]]}, "not an object"),
    ({"questions": [{"question_id": "7", "question": "Is it", "answer": "yes", "type": ["Audio", "Counting"]}]},
     "question_id '7' is not an integer"),
    ({"questions": [{"question_id": True, "question": "Is it", "answer": "yes", "type": ["Audio", "Counting"]}]},
     "is not an integer"),
    ({"questions": [{"question_id": 1, "question": " ", "answer": "yes", "type": ["Audio", "Counting"]}]},
     "empty or not a string"),
    ({"questions": [{"question_id": 1, "question": "Is it", "answer": 2, "type": ["Audio", "Counting"]}]},
     "answer 2"),
    ({"questions": [{"question_id": 1, "question": "Is it", "answer": "yes", "type": "[\"Audio\", \"Counting\"]"}]},
     "not one of the nine"),
    ({"questions": [{"question_id": 1, "question": "Is it", "answer": "yes", "type": ["Audio", "Location"]}]},
     "not one of the nine"),
    ([1, 2], "'questions' must be a non-empty list"),
])
def test_malformed_sample_json_is_a_value_error(meta, reason):
    """The stream turns the ValueError into a skipped sample (counted), never a stopped run."""
    train, test = release()
    codec = AVQATask(avqa_config(), manifest(train, test)).codec("val", 0)
    with pytest.raises(ValueError, match=reason):
        codec.parse(meta, "val-00003-x")


def test_the_manifest_must_hold_avqa_shards_with_a_vocabulary():
    train, test = release()
    good = manifest(train, test)
    with pytest.raises(ConfigError, match="schema 'avqa'.*holds schema 'avel'.*shards build musicavqa"):
        AVQATask(avqa_config(), {k: v for k, v in good.items() if k != "schema"})
    with pytest.raises(ConfigError, match="no 'vocab'"):
        AVQATask(avqa_config(), {k: v for k, v in good.items() if k != "vocab"})
    with pytest.raises(ConfigError, match="unusable"):
        AVQATask(avqa_config(), {**good, "vocab": {"words": ["a"], "answers": ["x"], "max_len": 3}})
    with pytest.raises(ConfigError, match="1 distinct answer"):
        AVQATask(avqa_config(), {**good, "vocab": {"words": [PAD, UNK, "a"], "answers": ["x"], "max_len": 3}})
    no_shards = AVQATask(avqa_config(), None)
    assert no_shards.baselines("test") == {}
    with pytest.raises(ConfigError, match="data.shards"):
        no_shards.build_head(32, ("a", "v"))


def test_majority_baseline_from_the_manifest_equals_the_one_from_the_questions():
    train, test = release()
    task = AVQATask(avqa_config(), manifest(train, test))
    got = task.baselines("test")
    want = majority_baseline(majority_answers(train), test)
    assert got["type_counts"] == want.counts and got["questions"] == len(test)
    for key, value in want.report().items():
        assert got[key] == value, key
    assert got["overall"] is not None
    with pytest.raises(ValueError, match="no answer_histogram for split 'val'"):
        task.baselines("val")
    bad = manifest(train, test)
    bad["splits"]["test"]["answer_histogram"] = {"Audio Counting": {"one": 1}}
    with pytest.raises(ValueError, match="'Audio Counting' is not '<scenario>/<kind>'"):
        AVQATask(avqa_config(), bad).baselines("test")


def test_majority_baseline_on_a_hand_made_histogram():
    train = {"Audio/Counting": {"two": 5, "one": 3}, "Visual/Location": {"left": 2, "right": 2}}
    test = {"Audio/Counting": {"two": 1, "one": 3}, "Visual/Location": {"left": 1, "right": 2},
            "Audio-Visual/Temporal": {"left": 2}}  # a type train never had: wrong
    task = AVQATask(avqa_config(), {**manifest(*release()), "splits": {
        "train": {"answer_histogram": train}, "test": {"answer_histogram": test}}})
    got = task.baselines("test")
    assert got["audio_counting"] == pytest.approx(1 / 4)
    assert got["visual_location"] == pytest.approx(1 / 3)  # tie broken alphabetically: 'left'
    assert got["audio_visual_temporal"] == 0.0 and got["audio_visual_existential"] is None
    assert got["overall"] == pytest.approx(2 / 9) and got["questions"] == 9


class FakeEncoderOutput:
    """What the shared encoder hands a head (contract 4): per-segment CLS and patch tokens per stream."""

    def __init__(self, streams, cls, patches):
        self.streams, self._cls, self._patches = streams, cls, patches

    def cls(self, s):
        return self._cls[s]

    def patches(self, s):
        return self._patches[s]


def test_head_on_encoder_output_with_ablations():
    train, test = release()
    task = AVQATask(avqa_config(hidden=16, word_dim=8, heads=4), manifest(train, test))
    codec = task.codec("test", 0)
    metas = samples(test)[:3]
    batch = codec.collate([codec.parse(m, m["key"]) for m in metas])
    torch.manual_seed(0)
    head = task.build_head(32, ("a", "v")).eval()
    V, T, N, D = len(metas), 10, 6, 32
    cls = {"a": torch.randn(V, T, D), "v": torch.randn(V, T, D)}
    patches = {"v": torch.randn(V, T, N, D)}
    out = head(FakeEncoderOutput(("a", "v"), cls, patches), batch)
    Q = len(batch["question_ids"])
    assert out.logits.shape == (Q, len(task.vocab.answers))
    # each question answered from its own video: the same as asking it alone
    for q in range(Q):
        v = int(batch["question_video"][q])
        one = {"questions": batch["questions"][q:q + 1], "question_video": torch.zeros(1, dtype=torch.long)}
        alone = head(FakeEncoderOutput(("a", "v"), {s: x[v:v + 1] for s, x in cls.items()},
                                       {"v": patches["v"][v:v + 1]}), one)
        torch.testing.assert_close(out.logits[q:q + 1], alone.logits, rtol=1e-5, atol=1e-6)
    # ablations: the absent stream's features are zeros
    audio_only = head(FakeEncoderOutput(("a",), {"a": cls["a"]}, {}), batch).logits
    zeros_v = head(FakeEncoderOutput(("a", "v"), {"a": cls["a"], "v": torch.zeros(V, T, D)},
                                     {"v": torch.zeros(V, T, 1, D)}), batch).logits
    torch.testing.assert_close(audio_only, zeros_v)
    visual_only = head(FakeEncoderOutput(("v",), {"v": cls["v"]}, patches), batch).logits
    zeros_a = head(FakeEncoderOutput(("a", "v"), {"a": torch.zeros(V, T, D), "v": cls["v"]}, patches), batch).logits
    torch.testing.assert_close(visual_only, zeros_a)
    # the loss and the training counts: questions right / questions
    task_loss = task.loss(out, batch)
    assert task_loss.count == Q and 0 <= int(task_loss.correct) <= Q
    known = batch["answers"] >= 0
    expected = torch.nn.functional.cross_entropy(out.logits[known], batch["answers"][known])
    torch.testing.assert_close(task_loss.loss, expected)
    hits = ((out.logits.argmax(-1) == batch["answers"]) & known).sum()
    assert int(task_loss.correct) == int(hits)


def test_evaluate_in_one_process_counts_every_question_with_its_own_type():
    """evaluate_task with a model that answers from a lookup table: per-type counts equal a hand count."""
    train, test = release()
    task = AVQATask(avqa_config(), manifest(train, test))
    codec = task.codec("test", 0)
    metas = samples(test)
    answers = {q.question_id: q.answer for q in test}
    first_answer = task.vocab.answers[0]

    class TableModel(torch.nn.Module):
        """Right on even question ids (where train knows the answer), else answers[0]."""
        streams = ("a", "v")
        def forward(self, batch):
            rows = []
            for qid in batch["question_ids"]:
                a = answers[qid] if qid % 2 == 0 and answers[qid] in task.vocab.answers else first_answer
                rows.append(torch.nn.functional.one_hot(torch.tensor(task.vocab.answers.index(a)),
                                                        len(task.vocab.answers)).float())
            return SimpleNamespace(logits=torch.stack(rows))

    batches = []
    for i in range(0, len(metas), 3):  # batches of 3 videos, whatever their question counts
        chunk = metas[i:i + 3]
        batches.append({**codec.collate([codec.parse(m, m["key"]) for m in chunk]), "key": [m["key"] for m in chunk],
                        "skipped": 1 if i == 0 else 0})
    result = evaluate_task(task, TableModel(), batches, torch.device("cpu"))
    expected = {t: [0, 0] for t in QUESTION_TYPES}
    for q in test:
        right = answers[q.question_id] in task.vocab.answers and (
            q.question_id % 2 == 0 or answers[q.question_id] == first_answer)
        expected[q.type][0] += int(right)
        expected[q.type][1] += 1
    assert result["type_counts"] == [c for c, _ in expected.values()] + [t for _, t in expected.values()]
    assert result["questions"] == len(test) and result["samples"] == len(metas) and result["skipped"] == 1
    assert result["unknown_answers"] == sum(q.answer not in task.vocab.answers for q in test)
    assert result["overall"] == pytest.approx(sum(c for c, _ in expected.values()) / len(test))
    assert json.loads(json.dumps(result)) == result  # result.json and metrics.jsonl take it as is


@pytest.fixture(scope="module")
def tiny_avqa_shards(tmp_path_factory):
    """12 synthetic videos (MUSIC-AVQA layout, every kind a scene supports asked) built by the real builder."""
    from avpea_dist.data.build import BuildOptions
    from avpea_dist.datasets.ave.synth import SynthSpec
    from avpea_dist.datasets.musicavqa.build import build_musicavqa
    from avpea_dist.datasets.musicavqa.synth import make_musicavqa

    base = tmp_path_factory.mktemp("avqa")
    make_musicavqa(base / "raw", videos=12, seed=1, questions=9, spec=SynthSpec(size=32, aac_fast=True))
    build_musicavqa(base / "raw" / "json", base / "raw" / "videos", base / "shards",
                    BuildOptions(workers=1, shard_size=2, frame_size=32, sampling="even", min_seconds=1),
                    progress=False)
    return base / "shards"


@pytest.mark.slow
@pytest.mark.distributed
def test_two_ranks_train_and_count_every_question_once_with_one_encoder_pass_per_video(tiny_avqa_shards, tmp_path):
    import subprocess
    import sys

    from avpea_dist.data.manifest import read_manifest
    from avpea_dist.runtime.startup import free_port

    script = Path(__file__).with_name("avqa_rank.py")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                           str(free_port()), str(script), str(tiny_avqa_shards), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads((tmp_path / "rank0.json").read_text())
    result, ranks = out["result"], out["ranks"]
    manifest = read_manifest(tiny_avqa_shards)
    # the trainer's own evaluation: every test question scored once, with its type
    assert result["status"] == "finished" and result["task"] == "avqa" and result["selection_metric"] == "overall"
    assert result["test_metrics"]["questions"] == manifest["splits"]["test"]["questions"]
    assert sum(result["test_metrics"]["type_counts"][9:]) == manifest["splits"]["test"]["questions"]
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [x for x in lines if x.get("split") == "val"]
    assert val and all(x["questions"] == manifest["splits"]["val"]["questions"] for x in val)
    for split in ("val", "test"):
        ids = [i for r in ranks for i in r[split]["question_ids"]]
        assert len(ids) == len(set(ids)) == manifest["splits"][split]["questions"], split  # each exactly once
        assert all(r[split]["metrics"]["questions"] == len(ids) for r in ranks)  # summed over ranks
        assert all(r[split]["metrics"]["samples"] == manifest["splits"][split]["samples"] for r in ranks)
        for r in ranks:  # one encoder pass per batch, over its videos only, however many questions they carry
            assert r[split]["encoded"] == r[split]["clips"]
        assert sum(q for r in ranks for q in r[split]["questions_per_batch"]) > sum(
            c for r in ranks for c in r[split]["clips"])
    assert all(r["alone_max_diff"] < 1e-5 for r in ranks)
