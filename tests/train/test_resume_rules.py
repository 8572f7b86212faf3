"""Resume follows the config: the schedule takes the new rates and length, run-breaking changes are
refused with one line (or allowed by name), and a changed model is refused before any file is touched."""

from __future__ import annotations

import shutil

import pytest

from avpea_dist.config import ConfigError
from avpea_dist.train.engine import lr_factor
from avpea_dist.train.metrics import read_jsonl
from avpea_dist.train.run import run_training

from trainkit import TINY, MemoryData, tiny_config

BASE = ["train.steps=4", "train.eval_every=4", "train.ckpt_every=2", "train.log_every=1", "train.deterministic=true",
        "optim.warmup_steps=2", "optim.lr_adapter=1e-3", "optim.lr_head=1e-3", "eval.final_split=none"]


def _cfg(out, *extra):
    return tiny_config(f"train.out={out}", *BASE, *extra)


def _run(out, *extra):
    cfg = _cfg(out, *extra)
    return run_training(cfg, data=MemoryData(cfg, 0))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 4-step run; each test resumes its own copy."""
    out = tmp_path_factory.mktemp("base") / "run"
    assert _run(out)["status"] == "finished"
    return out


@pytest.fixture
def run_dir(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def _snapshot(folder):
    return {p.relative_to(folder): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


def test_the_schedule_follows_the_changed_config_on_resume(run_dir):
    result = _run(run_dir, "train.steps=8", "optim.lr_adapter=2e-3", "optim.lr_head=4e-4", "optim.min_lr_ratio=0.1")
    assert result["status"] == "finished" and result["step"] == 8
    lines = {r["step"]: r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("split") == "train" and "loss" in r}
    assert sorted(lines) == list(range(1, 9))
    for step in range(5, 9):  # the new peak rates, the new length and floor; the old ones ended at step 4
        factor = lr_factor(step, 2, 8, 0.1)
        assert lines[step]["lr_adapter"] == pytest.approx(2e-3 * factor, rel=1e-9)
        assert lines[step]["lr_head"] == pytest.approx(4e-4 * factor, rel=1e-9)
    assert lines[4]["lr_adapter"] == pytest.approx(1e-3 * lr_factor(4, 2, 4, 0.01), rel=1e-9)


def test_a_run_breaking_change_is_refused_with_one_line_and_nothing_written(run_dir):
    before = _snapshot(run_dir)
    with pytest.raises(ConfigError) as err:
        _run(run_dir, "train.steps=6", "data.batch_size=3", "train.seed=5")
    text = str(err.value)
    assert "\n" not in text
    assert "data.batch_size was 2, now 3" in text and "train.seed was 0, now 5" in text
    assert "train.allow_resume_changes=[data.batch_size,train.seed]" in text and "train.out" in text
    assert _snapshot(run_dir) == before


def test_an_allowed_change_resumes(run_dir, caplog):
    result = _run(run_dir, "train.steps=6", "data.batch_size=3", "train.allow_resume_changes=[data.batch_size]")
    assert result["status"] == "finished" and result["step"] == 6
    assert any("data.batch_size 2 -> 3" in r.getMessage() for r in caplog.records)
    # The new checkpoints carry the new setting: the next rerun needs no override.
    assert _run(run_dir, "train.steps=7", "data.batch_size=3")["step"] == 7


def test_a_model_change_is_refused_before_any_file_is_touched(run_dir, synth_shards, capsys):
    from avpea_dist.train.entry import main

    before = _snapshot(run_dir)
    overrides = ["model.img_size=32", "model.mel_bins=32", "model.audio_frames=32", "model.num_segments=2",
                 "data.batch_size=2", "data.num_workers=0", "train.progress=false", "dist.timeout_s=60",
                 f"train.out={run_dir}", f"data.shards={synth_shards}", *BASE]
    capsys.readouterr()
    assert main([TINY, *overrides, "model.bottleneck=16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "model.bottleneck was 24, now 16" in err[0] and "train.out" in err[0]
    assert _snapshot(run_dir) == before  # config.yaml unchanged, no config.previous.yaml, no checkpoint moved


def test_resume_override_names_are_checked():
    with pytest.raises(ConfigError, match="did you mean 'data.batch_size'"):
        tiny_config("train.allow_resume_changes=[data.batchsize]")
    with pytest.raises(ConfigError, match="model.bottleneck' cannot be allowed.*new train.out"):
        tiny_config("train.allow_resume_changes=[model.bottleneck]")


def test_checkpoints_without_a_signature_are_checked_against_the_run_folders_config(tmp_path):
    from avpea_dist.config_load import dump_yaml
    from avpea_dist.train.elastic import CONSOLIDATED
    from avpea_dist.train.resume import check_resume, elastic_problem, resume_signature, saved_signature

    old = tiny_config()
    (tmp_path / "config.yaml").write_text(dump_yaml(old))
    saved = saved_signature({"world_size": 2, "files": {}}, tmp_path)  # a manifest written before signatures
    now = resume_signature(tiny_config("model.bottleneck=16"), 2, {"splits": {}})
    with pytest.raises(ConfigError, match="model.bottleneck was 24, now 16"):
        check_resume(saved, now, [], tmp_path / "checkpoints" / "step_00000002")
    assert check_resume(saved, resume_signature(old, 2, None), [], tmp_path) == []
    # Another world size passes the config check; without the consolidated state it cannot be re-partitioned.
    assert check_resume(saved, resume_signature(old, 1, None), [], tmp_path) == []
    problem = elastic_problem(saved, resume_signature(old, 1, None), tmp_path, CONSOLIDATED)
    assert "world_size was 2, now 1" in problem and "relaunch with 2 ranks" in problem and "\n" not in problem
    (tmp_path / CONSOLIDATED).write_bytes(b"")
    assert elastic_problem(saved, resume_signature(old, 1, None), tmp_path, CONSOLIDATED) == ""
