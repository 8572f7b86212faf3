"""Clip classification's head, losses, evaluation hooks (one rank, and two real gloo ranks through the
trainer's evaluation loop), class prior baseline and demo settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from avpea_dist.models.encoder import EncoderOutput
from avpea_dist.tasks.classification.head import ClipHead
from avpea_dist.tasks.classification.loss import clip_loss
from avpea_dist.tasks.classification.metrics import clip_metrics, prior_baseline
from avpea_dist.train.evaluate import evaluate_task
from test_classification_codec import audioset_manifest, config, vggsound_manifest


def encoding(streams: tuple[str, ...], B: int = 3, T: int = 4, D: int = 6, seed: int = 0) -> EncoderOutput:
    g = torch.Generator().manual_seed(seed)
    raw = {s: torch.randn(B * T, 5, D, generator=g) for s in streams}  # 5 tokens a segment, CLS first
    return EncoderOutput(raw, B, T, nn.Identity(), {s: (2, 2) for s in streams})


@pytest.mark.parametrize("streams", [("a", "v"), ("a",), ("v",)])
@pytest.mark.parametrize("hidden", [0, 16])
def test_the_head_classifies_the_clip_from_its_pooled_cls_tokens(streams, hidden):
    torch.manual_seed(0)
    head = ClipHead(6 * len(streams), 11, hidden)
    enc = encoding(streams)
    logits = head(enc, {})
    assert logits.shape == (3, 11) and logits.dtype == torch.float32
    pooled = torch.cat([enc.cls(s).mean(1) for s in streams], dim=-1)  # audio first, each over the 4 segments
    assert torch.allclose(logits, head.classifier(head.norm(pooled)))
    assert torch.allclose(head(pooled), logits)  # pooled features in: the classifier alone
    assert len(head.classifier) == (3 if hidden else 1)


def test_max_pooling_takes_each_channels_largest_segment():
    head = ClipHead(12, 4, pooling="max")
    enc = encoding(("a", "v"))
    assert torch.equal(head.pool(enc), torch.cat([enc.cls("a").amax(1), enc.cls("v").amax(1)], dim=-1))


def test_the_task_sizes_its_head_for_the_present_streams():
    from avpea_dist.tasks.classification.task import ClassificationTask

    task = ClassificationTask(config(True, 8, "classification.head_hidden=0"), audioset_manifest())
    assert task.build_head(192, ("a", "v")).norm.weight.shape == (384,)
    assert task.build_head(192, ("v",)).classifier[-1].weight.shape == (8, 192)


def test_losses_are_softmax_cross_entropy_or_per_class_binary_cross_entropy():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 7, generator=g)
    labels = torch.tensor([0, 3, 6, 2, 2])
    one_hot = F.one_hot(labels, 7).float()
    assert torch.allclose(clip_loss(logits, one_hot, multilabel=False), F.cross_entropy(logits, labels))
    multi = (torch.rand(5, 7, generator=g) < 0.3).float()
    bce = -(multi * F.logsigmoid(logits) + (1 - multi) * F.logsigmoid(-logits)).mean()
    assert torch.allclose(clip_loss(logits, multi, multilabel=True), bce)
    for ml, t in ((False, one_hot), (True, multi)):
        assert torch.allclose(clip_loss(logits, t, ml, reduction="sum"), 5 * clip_loss(logits, t, ml))


def test_the_training_loss_counts_clips_whose_best_class_is_theirs():
    from avpea_dist.tasks.classification.task import ClassificationTask

    task = ClassificationTask(config(True, 8), audioset_manifest())
    logits = torch.tensor([[5.0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 5.0, 0, 0, 0, 0, 0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, 1], [0, 1, 0, 0, 0, 0, 0, 0]])
    r = task.loss(logits, {"targets": targets})
    assert int(r.correct) == 1 and r.count == 2 and r.loss.requires_grad


# -- evaluation: the task's hooks through the trainer's loop -------------------------------------------


class Scripted(nn.Module):
    """A model whose logits are the batch's own (so the expected numbers are known without a network)."""

    streams = ("a", "v")

    def forward(self, batch: dict) -> torch.Tensor:
        return batch["logits"]


def clips_batch(keys: list[str], classes: int, multilabel: bool, seed: int, skipped: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    n = len(keys)
    if multilabel:
        targets = (torch.rand(n, classes, generator=g) < 0.3).float()
    else:
        targets = F.one_hot(torch.randint(0, classes, (n,), generator=g), classes).float()
    return {"key": keys, "logits": torch.randn(n, classes, generator=g), "targets": targets, "skipped": skipped}


def shares(multilabel: bool, classes: int) -> dict[int, list[dict]]:
    """Rank 0: two batches; rank 1: one batch and one whose clips were all skipped."""
    empty = {"key": [], "logits": torch.zeros(0, classes), "targets": torch.zeros(0, classes), "skipped": 2}
    return {0: [clips_batch(["a1", "a2", "a3"], classes, multilabel, 0), clips_batch(["a4", "a5"], classes, multilabel, 1)],
            1: [clips_batch(["b1", "b2", "b3", "b4"], classes, multilabel, 2, skipped=1), empty]}


def task_of(multilabel: bool):
    from avpea_dist.tasks.classification.task import ClassificationTask

    return (ClassificationTask(config(True, 8), audioset_manifest()) if multilabel
            else ClassificationTask(config(False, 6), vggsound_manifest()))


def expected(multilabel: bool, batches: list[dict], names: list[str]) -> dict:
    logits = torch.cat([b["logits"] for b in batches])
    targets = torch.cat([b["targets"] for b in batches])
    scores = logits.sigmoid() if multilabel else logits.softmax(-1)
    m = clip_metrics(scores, targets, names)
    m["loss"] = clip_loss(logits, targets, multilabel).item()
    return m


@pytest.mark.parametrize("multilabel", [False, True])
def test_one_rank_scores_every_clip_of_the_split(multilabel):
    task = task_of(multilabel)
    batches = shares(multilabel, len(task.names))[0] + shares(multilabel, len(task.names))[1]
    m = evaluate_task(task, Scripted(), batches, torch.device("cpu"), split="val")
    want = expected(multilabel, batches, task.names)
    assert m["samples"] == 9 and m["skipped"] == 3 and m["clips"] == 9
    for k in ("top1", "top5", "map", "mauc", "d_prime"):
        assert m[k] == pytest.approx(want[k], abs=1e-12), k
    assert m["loss"] == pytest.approx(want["loss"], rel=1e-6)  # per-batch fp32 sums added in float64
    assert m["score"] == (m["map"] if multilabel else m["top1"])
    assert m["per_class"] == want["per_class"] and m["per_class"][0]["class"] == task.names[0]


def _rank(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        result = {}
        for multilabel in (False, True):
            task = task_of(multilabel)
            result[str(multilabel)] = evaluate_task(task, Scripted(), shares(multilabel, len(task.names))[rank],
                                                    torch.device("cpu"), split="test")
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_get_the_one_rank_result(tmp_path):
    from avpea_dist.runtime.ports import free_port

    mp.spawn(_rank, args=(free_port(), str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for multilabel in (False, True):
        task = task_of(multilabel)
        s = shares(multilabel, len(task.names))
        alone = json.loads(json.dumps(evaluate_task(task, Scripted(), s[0] + s[1], torch.device("cpu"), split="test")))
        for got in ranks:
            assert got[str(multilabel)] == alone  # rows gathered in rank order = one rank reading both shares


# -- the class prior baseline and the demo's settings -------------------------------------------------


def split_counts(manifest: dict, counts: list[int], samples: int) -> dict:
    return {"samples": samples, "label_counts": dict(zip(manifest["classes"], counts))}


def with_splits(manifest: dict) -> dict:
    manifest["splits"] = {"train": split_counts(manifest, [50, 20, 30, 5, 0, 9, 12, 3], 100),
                          "test": split_counts(manifest, [10, 2, 0, 4, 1, 6, 3, 1], 20)}
    return manifest


def test_the_baseline_is_the_training_class_prior_as_a_constant_scorer():
    from avpea_dist.tasks.classification.task import ClassificationTask

    task = ClassificationTask(config(True, 8), with_splits(audioset_manifest()))
    b = task.baselines("test")
    assert b == {**prior_baseline([50, 20, 30, 5, 0, 9, 12, 3], [10, 2, 0, 4, 1, 6, 3, 1], 20, True), "score": b["map"]}
    assert b["top1"] == 10 / 20 and b["map"] == pytest.approx(sum([10, 2, 4, 1, 6, 3, 1]) / 20 / 7)
    assert ClassificationTask(config(True, 8), audioset_manifest()).baselines("test") == {}  # no counts: none


def outcome(maps: dict[str, float]):
    from avpea_dist.tasks.demo_settings import DemoOutcome

    results = {name: {"test_metrics": {"map": v, "mauc": 0.8, "d_prime": 1.2, "top1": 0.5}} for name, v in maps.items()}
    return DemoOutcome(cfg=config(True, 8), out=Path("out"), raw=Path("raw"), shards=Path("shards"),
                       manifest=with_splits(audioset_manifest()), results=results)


@pytest.mark.parametrize("maps, ok", [({"av_pea": 0.61, "audio_only": 0.42, "visual_only": 0.60}, True),
                                      ({"av_pea": 0.55, "audio_only": 0.42, "visual_only": 0.55}, False)])
def test_the_demo_passes_only_when_av_pea_beats_both_single_streams_on_test_map(maps, ok):
    from avpea_dist import plugins
    from avpea_dist.tasks.classification.demo import DEMO

    assert plugins.load(plugins.task_spec("classification").demo) is DEMO and DEMO.dataset == "audioset"
    assert DEMO.config == "classification_tiny"
    o = outcome(maps)
    s = DEMO.measure(o)
    assert s["test"]["av_pea"]["map"] == maps["av_pea"] and s["test_clips"] == 20 and s["classes"] == 8
    assert s["test"]["class_prior"]["map"] == pytest.approx(sum([10, 2, 4, 1, 6, 3, 1]) / 20 / 7, abs=1e-4)
    checks = DEMO.bar(s, o)
    assert list(checks.values()) == [ok]
    summary = {"ok": ok, **s, "seed": 0, "ranks": 2, "runs": dict.fromkeys(maps), "reused_runs": [],
               "train_seconds": 100.0, "data_seconds": 10.0}
    text = "\n".join(DEMO.report(summary, o))
    assert "class prior (constant scorer)" in text and ("beats both" in text) == ok and ("DID NOT BEAT" in text) != ok
    assert DEMO.synth(o.cfg, 240, 3) == {"clips": 240, "seed": 3, "size": 64}  # AudioSetSynth.make's options
