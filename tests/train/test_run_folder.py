"""A run folder usable from anywhere, and errors that come before the first step (issue 22): the config's
paths recorded absolute at the start of a run; every split the run reads checked before the model is built;
a data.shards that is not a folder named as such (never 'rebuild')."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from avpea_dist.config_load import load_config
from avpea_dist.train.data_source import ShardData
from avpea_dist.train.run import run_training
from avpea_dist.train.runsetup import absolute_paths

from trainkit import REPO, MemoryData, tiny_config


@pytest.mark.slow
def test_a_run_records_its_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config("train.out=runs/rel", "data.shards=shards/rel", "train.steps=1", "train.eval_every=1",
                      "train.ckpt_every=1", "optim.warmup_steps=0", "eval.final_split=none")
    result = run_training(cfg, data=MemoryData(cfg, 0, epoch_batches=1, eval_batches=1))
    saved = yaml.safe_load((tmp_path / "runs" / "rel" / "config.yaml").read_text())
    assert saved["data"]["shards"] == str(tmp_path / "shards" / "rel")
    assert saved["train"]["out"] == str(tmp_path / "runs" / "rel") == result["run_dir"]


def test_paths_become_absolute_and_keywords_and_hub_names_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder in ("shards", "scratch", "models/bert"):  # folders named like the keywords must not win
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "vit.safetensors").write_bytes(b"")
    retrieval = load_config(REPO + "/configs/retrieval_tiny.yaml",
                            ["data.shards=shards", "train.out=../up/run", "train.resume=ckpt/step_00000002",
                             "model.pretrained=vit.safetensors", "retrieval.text_model=models/bert"])
    r = absolute_paths(retrieval)
    assert (r.data.shards, r.train.out) == (str(tmp_path / "shards"), str(tmp_path.parent / "up" / "run"))
    assert r.train.resume == str(tmp_path / "ckpt" / "step_00000002")
    assert r.model.pretrained == str(tmp_path / "vit.safetensors")
    assert r.retrieval.text_model == str(tmp_path / "models" / "bert")
    assert absolute_paths(load_config(REPO + "/configs/retrieval_tiny.yaml", ["retrieval.text_model=shards"])
                          ).retrieval.text_model == "shards"
    assert absolute_paths(load_config(REPO + "/configs/retrieval_tiny.yaml", ["retrieval.text_model=bert-base-uncased"])
                          ).retrieval.text_model == "bert-base-uncased"
    c = absolute_paths(load_config(REPO + "/configs/captioning_tiny.yaml", ["captioning.decoder=scratch"]))
    assert c.captioning.decoder == "scratch" and c.train.resume == "latest"
    assert absolute_paths(tiny_config("model.pretrained=timm")).model.pretrained == "timm"


@pytest.fixture
def shards_copy(synth_shards, tmp_path):
    """A copy of the session's synthetic AVE shards whose manifest a test may edit."""
    out = tmp_path / "shards"
    shutil.copytree(synth_shards, out)
    return out


def _empty_split(shards, split):
    path = shards / "manifest.json"
    m = json.loads(path.read_text())
    s = m["splits"][split]
    s["skipped"] = [{"id": f"v{i}", "key": f"v{i}", "reason": "missing file"} for i in range(s["records"])]
    s.update(samples=0, shards=[])
    path.write_text(json.dumps(m))
    index = shards / "index.json"  # what readers take the manifest's facts from, as a build writes it
    from avpea_dist.data.manifest import describe

    index.write_text(json.dumps({**json.loads(index.read_text()), "manifest": describe(m)}))


def test_an_empty_val_split_stops_the_run_before_the_model_is_built(shards_copy, tmp_path):
    _empty_split(shards_copy, "val")
    run = tmp_path / "run"
    cfg = tiny_config(f"data.shards={shards_copy}", f"train.out={run}")
    with pytest.raises(ValueError) as e:
        run_training(cfg)
    line = str(e.value)
    assert "\n" not in line and "split 'val' holds no sample" in line and "all 7 of its records were skipped" in line
    assert "missing file" in line and "validates on it" in line and "avpea shards inspect" in line
    assert not (run / "config.yaml").exists()  # nothing started: no model, no run files


def test_the_final_split_is_checked_unless_the_run_skips_it(shards_copy):
    _empty_split(shards_copy, "test")
    with pytest.raises(ValueError, match=r"split 'test' holds no sample.*eval\.final_split=none"):
        ShardData(tiny_config(f"data.shards={shards_copy}"), 0, 1)
    data = ShardData(tiny_config(f"data.shards={shards_copy}", "eval.final_split=none"), 0, 1)
    assert data.epoch_batches > 0
    ShardData(tiny_config(f"data.shards={shards_copy}"), 0, 1, splits=("val",))  # `avpea eval --split val`


def test_shards_that_are_not_a_folder_are_not_told_to_rebuild(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        ShardData(tiny_config("data.shards=shards/ave"), 0, 1)
    assert f"relative to the working folder {tmp_path}" in str(e.value) and "rebuild" not in str(e.value)
