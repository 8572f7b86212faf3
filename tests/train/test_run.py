"""run_training in one process on in-memory batches: the loop's decisions and the run folder."""

from __future__ import annotations

import json

import pytest

from avpea_dist.config import ConfigError
from avpea_dist.train import preempt
from avpea_dist.train.loop import TrainingError
from avpea_dist.train.metrics import read_jsonl
from avpea_dist.train.run import run_training

from trainkit import MemoryData, tiny_config


def _cfg(out, *extra):
    return tiny_config(f"train.out={out}", "train.steps=6", "train.eval_every=2", "train.ckpt_every=2",
                       "train.log_every=1", "train.deterministic=true", "optim.warmup_steps=2", *extra)


def _losses(out):
    return [(r["step"], r["loss"], r["data_digest"]) for r in read_jsonl(out / "metrics.jsonl")
            if r.get("split") == "train" and "loss" in r]


def test_run_folder_preemption_and_exact_resume(tmp_path):
    straight = run_training(_cfg(tmp_path / "a"), data=MemoryData(_cfg(tmp_path / "a"), 0))
    assert straight["status"] == "finished" and straight["step"] == 6
    assert straight["test_accuracy"] is not None and straight["best_step"] in (2, 4, 6)
    a = tmp_path / "a"
    for name in ("config.yaml", "run.json", "metrics.jsonl", "result.json", "best/adapters.safetensors",
                 "final/adapters.safetensors", "checkpoints/latest"):
        assert (a / name).is_file(), name
    assert json.loads((a / "run.json").read_text())["git"]["commit"]
    assert "RANDOMLY INITIALISED" in json.loads((a / "run.json").read_text())["backbone_weights"]["warning"]
    assert list((a / "tb").iterdir()), "no TensorBoard events"

    evals = []

    def stop_after_first_eval(step, metrics):
        evals.append((step, metrics["accuracy"]))
        preempt.request_stop("test")
        preempt.request_stop("test again")  # a second signal must not cause a second save

    b = tmp_path / "b"
    first = run_training(_cfg(b), on_eval=stop_after_first_eval, data=MemoryData(_cfg(b), 0))
    assert first["status"] == "preempted" and first["step"] == 3  # the flag is read at the next boundary and first["test_accuracy"] is None
    assert evals == [(2, evals[0][1])]
    assert (b / "checkpoints" / "latest").read_text().strip() == "step_00000003"
    second = run_training(_cfg(b), data=MemoryData(_cfg(b), 0))
    assert second["status"] == "finished"
    assert _losses(a) == _losses(b), "a preempted and resumed run must match an uninterrupted one bit for bit"
    assert second["test_accuracy"] == straight["test_accuracy"]


def test_consecutive_non_finite_steps_stop_the_run(tmp_path):
    cfg = _cfg(tmp_path / "r", "train.max_skipped_steps=3")
    with pytest.raises(TrainingError, match="3 consecutive steps had a non-finite loss"):
        run_training(cfg, data=MemoryData(cfg, 0, nan_at=set(range(1, 100))))
    records = read_jsonl(tmp_path / "r" / "metrics.jsonl")
    assert [r["step"] for r in records if r.get("skipped")] == [1, 1, 1]  # the step counter never moved


def test_a_single_non_finite_step_is_skipped_and_training_goes_on(tmp_path):
    cfg = _cfg(tmp_path / "r")
    result = run_training(cfg, data=MemoryData(cfg, 0, nan_at={2}))
    assert result["status"] == "finished" and result["step"] == 6 and result["skipped_steps"] == 1


def test_too_much_corrupt_data_stops_the_run(tmp_path):
    cfg = _cfg(tmp_path / "r", "data.max_bad_fraction=0.2")
    with pytest.raises(TrainingError, match="corrupt"):
        run_training(cfg, data=MemoryData(cfg, 0, bad_per_batch=1))  # 1 of 3 samples bad: 33%


def test_resume_none_refuses_a_folder_with_checkpoints(tmp_path):
    cfg = _cfg(tmp_path / "r", "train.steps=2")
    run_training(cfg, data=MemoryData(cfg, 0))
    with pytest.raises(ConfigError, match="train.resume=none"):
        run_training(_cfg(tmp_path / "r", "train.steps=2", "train.resume=none"), data=MemoryData(cfg, 0))


def test_class_count_must_match_the_shards(synth_shards, tmp_path):
    cfg = _cfg(tmp_path / "r", f"data.shards={synth_shards}", "model.num_classes=5")
    with pytest.raises(ConfigError, match="model.num_classes=9"):
        run_training(cfg)


def test_the_deepspeed_launchers_local_rank_argument_is_not_an_override():
    from avpea_dist.train.entry import _drop_local_rank

    assert _drop_local_rank(["c.yaml", "--local_rank=1", "train.steps=2"]) == ["c.yaml", "train.steps=2"]
    assert _drop_local_rank(["--local_rank", "0", "c.yaml"]) == ["c.yaml"]
