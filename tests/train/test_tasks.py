"""Tasks as plug-ins: a task registered from a test trains through the unchanged trainer; the shards'
schema must match the task; a sample its codec refuses is skipped and counted, never fatal."""

from __future__ import annotations

import json

import pytest
import torch

from toytask import write_shards
from trainkit import tiny_config


@pytest.fixture
def toy_registered(monkeypatch):
    """The toy task added to the registry for one test, as an entry point of another distribution would add
    it (``plugins.task_specs`` is the one list every lookup reads; monkeypatch takes the entry out again)."""
    from avpea_dist import plugins
    from toytask import SPEC

    monkeypatch.setitem(plugins.task_specs(), SPEC.name, SPEC)


def _small(*overrides: str):
    # The shards' spectrograms are 128x102 and 10 segments: only the frames are small.
    return tiny_config("model.img_size=16", "model.mel_bins=128", "model.audio_frames=102", "model.num_segments=10",
                       "eval.batch_size=2", *overrides)


def test_a_task_registered_in_a_test_trains_with_the_unchanged_trainer(toy_registered, tmp_path):
    from avpea_dist.train.run import run_training

    shards = write_shards(tmp_path / "shards", {"train": 4, "val": 3, "test": 3})
    cfg = _small("task=toy", f"data.shards={shards}", f"train.out={tmp_path / 'run'}", "train.steps=2",
                 "train.eval_every=1", "train.log_every=1")
    result = run_training(cfg)
    assert result["status"] == "finished" and result["step"] == 2 and result["task"] == "toy"
    assert result["selection_metric"] == "score" and result["test_score"] is not None
    assert result["best_val_score"] is not None and result["test_metrics"]["table"]["clips"] == 3
    assert result["test_samples"] == 3 and "best_val_accuracy" not in result
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["test_metrics"] == result["test_metrics"]
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [x for x in lines if x.get("split") == "val"]
    assert [x["step"] for x in val] == [1, 2] and all("score" in x and "table" not in x for x in val)
    assert all("accuracy" in x for x in lines if x.get("split") == "train" and "loss" in x)  # TaskLoss counts
    assert (tmp_path / "run" / "shards_manifest.json").is_file()

    from avpea_dist.apps.runmodel import load_run

    cfg2, task, model = load_run(tmp_path / "run")
    assert task.name == "toy" and type(model.head).__name__ == "ToyHead" and not model.training


def test_shards_of_another_schema_are_refused_with_the_fix(tmp_path):
    from avpea_dist.config import ConfigError
    from avpea_dist.data.manifest import read_manifest
    from avpea_dist.train.data_source import ShardData

    captions = write_shards(tmp_path / "valor", {"train": 1}, schema="captions")
    assert "classes" not in read_manifest(captions)  # only AVEL shards need classes
    with pytest.raises(ConfigError, match=r"task=avel reads shards of schema 'avel', but data.shards=.* holds "
                                          r"schema 'captions'; point data.shards at avel shards or set "
                                          r"task=captioning or task=retrieval"):
        ShardData(_small(f"data.shards={captions}"), 0, 1)
    odd = write_shards(tmp_path / "odd", {"train": 1}, schema="subtitles")
    with pytest.raises(ValueError, match=r"'schema' is 'subtitles'; this code reads 'avel', 'avqa', 'captions'"):
        read_manifest(odd)
    old = write_shards(tmp_path / "old", {"train": 1, "val": 1, "test": 1})  # no schema key: AVEL's, as written before schemas
    assert ShardData(_small(f"data.shards={old}", "avel.num_classes=3"), 0, 1).task.name == "avel"


class _RefuseOdd:
    """A codec that refuses every sample with an odd index (its key's number)."""

    def parse(self, meta, key):
        if int(key.split("-")[1]) % 2:
            raise ValueError("odd sample")
        return int(key.split("-")[1])

    def collate(self, targets):
        return {"index": torch.tensor(targets, dtype=torch.int64)}


def test_a_sample_the_codec_refuses_is_skipped_and_counted(tmp_path):
    from avpea_dist.data.loaders import make_eval_loader, make_train_loader

    shards = write_shards(tmp_path / "shards", {"train": 6, "val": 6})
    kw = dict(batch_size=2, img_size=16, num_workers=0, rank=0, world_size=1)
    batches = list(make_eval_loader(shards, "val", codec=_RefuseOdd(), **kw))
    assert [i for b in batches for i in b["index"].tolist()] == [0, 2, 4]
    assert sum(b["skipped"] for b in batches) == 3 and all("labels" not in b for b in batches)
    train = list(make_train_loader(shards, codec=_RefuseOdd(), shuffle_buffer=4, seed=0, epoch=0, epoch_batches=3,
                                   **kw))
    assert len(train) == 3 and all(i % 2 == 0 for b in train for i in b["index"].tolist())
    assert sum(b["skipped"] for b in train) >= 3  # refused ones are replaced by accepted draws, and counted


def test_a_task_without_a_demo_module_says_so(toy_registered, tmp_path):
    from avpea_dist.apps.demo import run_task_demo

    with pytest.raises(ValueError, match=r"the toy demo is not available in this version \(its TaskSpec names no "
                                         r"demo settings\); demos available: avel"):
        run_task_demo("toy", tmp_path)
    with pytest.raises(ValueError, match=r"--task 'nope': choose one of avel, "):
        run_task_demo("nope", tmp_path)
