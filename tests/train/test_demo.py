"""`avpea demo`: the one ablation harness (apps/demo.py) and each task's demo settings; end to end on a toy
budget (data, three torchrun trainings, the table, summary.json, a rerun that reuses everything)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trainkit import REPO

from avpea_dist import plugins
from avpea_dist.apps import demo as harness
from avpea_dist.tasks.demo_settings import DemoOutcome, DemoSettings


def test_every_task_demo_is_settings_naming_a_registered_dataset_with_a_generator():
    demos = harness.available_demos()
    assert {"avel", "avqa", "retrieval", "captioning"} <= set(demos)
    for task in demos:
        settings = harness.demo_settings(task)
        assert isinstance(settings, DemoSettings) and settings.clips > 0
        assert plugins.dataset_spec(settings.dataset).synth is not None
        assert harness.default_config(settings.config).is_file()
        assert settings.variants["av_pea"] == ("model.modalities=av",)


def test_the_harness_names_no_task_and_no_dataset():
    source = (Path(harness.__file__)).read_text()
    code = re.sub(r'""".*?"""', "", source, flags=re.S)  # the docstrings may say what a demo is
    for name in [*plugins.task_specs(), *plugins.dataset_specs()]:
        assert not re.search(rf"\b{name}\b", code), f"apps/demo.py names {name!r}"


def test_unknown_task_and_a_task_without_demo_settings_are_clear_errors(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match=r"--task 'nope': choose one of avel"):
        harness.run_task_demo("nope", tmp_path)
    spec = plugins.task_spec("avel")
    specs = {**plugins.task_specs(), "toy": plugins.TaskSpec(name="toy", task=spec.task, schema=spec.schema)}
    monkeypatch.setattr(plugins, "task_specs", lambda: specs)
    with pytest.raises(ValueError, match=r"the toy demo is not available in this version \(its TaskSpec names no "
                                         r"demo settings\); demos available: avel, "):
        harness.run_task_demo("toy", tmp_path)


def test_a_config_of_another_task_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r"trains task 'avel'; the retrieval demo needs a retrieval config"):
        harness.run_task_demo("retrieval", tmp_path / "demo", config=harness.default_config("avel_tiny"))
    assert not (tmp_path / "demo").exists()


def test_a_folder_of_another_demo_is_refused(tmp_path):
    run = tmp_path / "runs" / "av_pea"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"status": "finished"}))  # a run from before tasks
    with pytest.raises(ValueError, match=r"an unknown task .*--out runs/demo_retrieval"):
        harness.check_out(tmp_path, "retrieval", "valor")
    (run / "result.json").write_text(json.dumps({"status": "finished", "task": "avel"}))
    with pytest.raises(ValueError, match=r"a run of task 'avel'.*--out"):
        harness.check_out(tmp_path, "retrieval", "valor")
    (run / "result.json").write_text(json.dumps({"status": "finished", "task": "retrieval"}))
    harness.check_out(tmp_path, "retrieval", "valor")
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "synth.json").write_text("{}")  # data without the harness's record
    with pytest.raises(ValueError, match="data this demo did not make"):
        harness.check_out(tmp_path, "retrieval", "valor")
    (tmp_path / "data" / "demo.json").write_text(json.dumps({"dataset": "ave"}))
    with pytest.raises(ValueError, match="another demo's data"):
        harness.check_out(tmp_path, "retrieval", "valor")
    (tmp_path / "data" / "demo.json").write_text(json.dumps({"dataset": "valor"}))
    harness.check_out(tmp_path, "retrieval", "valor")


class _Fake:
    """A dataset's generator and builder that record their calls (the real ones are tested in tests/data)."""

    def __init__(self):
        self.calls = []

    def make(self, out, progress=False, **options):
        self.calls.append(("make", options))
        (Path(out) / "made").mkdir(parents=True, exist_ok=True)
        return {}

    def source(self, out):
        return {"root": out}

    def build(self, out, opts, progress=True, **source):
        # Whether shards were there already: kept when only the run's options changed, else removed first.
        self.calls.append(("build", opts.frame_size, opts.sampling, source["root"].name, Path(out).exists()))
        Path(out).mkdir(parents=True, exist_ok=True)


def test_the_synthetic_set_is_reused_when_the_same_and_remade_when_not(monkeypatch, tmp_path):
    from avpea_dist.config_load import load_config

    settings = harness.demo_settings("avqa")
    fake = _Fake()
    monkeypatch.setattr(plugins, "load", lambda ref: fake)
    cfg = load_config(harness.default_config(settings.config), [])
    raw, shards = harness.prepare_data(tmp_path, settings, cfg, 12, 0)
    assert (raw, shards) == (tmp_path / "data" / "raw", tmp_path / "data" / "shards")
    assert fake.calls == [("make", {"videos": 12, "seed": 0, "questions": 18, "instruments": 4}),
                          ("build", cfg.model.img_size, "even", "raw", False)]
    harness.prepare_data(tmp_path, settings, cfg, 12, 0)
    assert fake.calls[2:] == [("build", cfg.model.img_size, "even", "raw", True)]  # no new synthesis
    small = load_config(harness.default_config(settings.config), ["model.img_size=32"])
    harness.prepare_data(tmp_path, settings, small, 12, 0)  # other frames: the shards go, the set stays
    assert fake.calls[3:] == [("build", 32, "even", "raw", False)] and (raw / "made").is_dir()
    harness.prepare_data(tmp_path, settings, small, 12, 1)  # another seed: everything is made again
    assert fake.calls[4][0] == "make" and fake.calls[4][1]["seed"] == 1


def _outcome(results, manifest, tmp_path):
    return DemoOutcome(cfg=None, out=tmp_path, raw=tmp_path, shards=tmp_path, manifest=manifest, results=results)


@pytest.mark.parametrize("av, best_single, ok", [(0.80, 0.74, True), (0.80, 0.76, False), (0.60, 0.70, False)])
def test_avel_bar_is_a_5_point_margin_over_every_other_column(tmp_path, av, best_single, ok):
    settings = harness.demo_settings("avel")
    manifest = {"splits": {"train": {"segment_histogram": [10, 30]}, "test": {"segment_histogram": [4, 6]}}}
    o = _outcome({"av_pea": {"test_accuracy": av}, "audio_only": {"test_accuracy": best_single},
                  "visual_only": {"test_accuracy": 0.1}}, manifest, tmp_path)
    measured = settings.measure(o)
    assert measured["test_accuracy"]["majority"] == 0.6 and measured["test_segments"] == 10
    assert all(settings.bar(measured, o).values()) == ok


def test_retrieval_bar_needs_r1_above_both_streams_in_both_directions(tmp_path):
    settings = harness.demo_settings("retrieval")
    keys = ("t2v_r1", "t2v_r5", "t2v_r10", "v2t_r1", "v2t_r5", "v2t_r10")
    manifest = {"splits": {"test": {"samples": 60, "captions": 120}}}

    def run(r1):
        return {"test_metrics": {k: (r1 if k.endswith("_r1") else 0.5) for k in keys}}

    o = _outcome({"av_pea": run(0.3), "audio_only": run(0.2), "visual_only": run(0.25)}, manifest, tmp_path)
    measured = settings.measure(o)
    assert measured["chance"]["t2v_r1"] == round(1 / 60, 4) and measured["fusion_margin_r1"]["v2t_r1"] == 0.05
    assert all(settings.bar(measured, o).values())
    o.results["visual_only"] = run(0.3)
    assert not any(settings.bar(settings.measure(o), o).values())




@pytest.mark.slow
@pytest.mark.distributed
def test_demo_writes_the_summary_and_the_table(tmp_path):
    out = tmp_path / "demo"
    # One rank per run and a handful of steps: the real demo's learning is measured in the README (Training).
    cmd = [sys.executable, "-m", "avpea_dist.cli", "demo", "--task", "avel", "--out", str(out), "--clips", "24", "--nproc", "1",
           "model.img_size=32", "train.steps=3", "train.eval_every=3", "train.ckpt_every=3", "eval.batch_size=4",
           "train.progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "TQDM_DISABLE": "1"}
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode in (0, 1), p.stderr[-3000:]  # 1: ran, but 3 steps cannot show fusion
    summary = json.loads((out / "summary.json").read_text())
    acc = summary["test_accuracy"]
    assert set(acc) == {"av_pea", "majority", "audio_only", "visual_only"}
    assert all(0.0 <= v <= 1.0 for v in acc.values()) and summary["train_seconds"] > 0
    assert summary["ok"] == (p.returncode == 0) == all(summary["checks"].values())
    assert summary["task"] == "avel" and summary["clips"] == 24 and set(summary["runs"]) == set(acc) - {"majority"}
    assert "majority class" in p.stdout and "AV-PEA" in p.stdout
    for name in ("av_pea", "audio_only", "visual_only"):
        result = json.loads((out / "runs" / name / "result.json").read_text())
        assert result["status"] == "finished" and result["test_accuracy"] == acc[name]
    # A rerun reuses the finished runs and the built shards instead of training again.
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=200)
    assert again.stdout.count("reusing the finished run") == 3, again.stdout[-2000:]
    assert "reusing the synthetic ave set" in again.stdout
    assert "reused the 3 finished runs" in again.stdout and "training + evaluation: 0 s" not in again.stdout
