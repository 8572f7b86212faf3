"""`avpea demo --seeds`: every variant trains once per seed on the same data; the summary holds each number as
mean ± std with n, and a seed whose training fails is named while the others still count. Training is
replaced by recorded results here (the harness's real runs are tests/train/test_demo.py's slow test)."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from avpea_dist.apps import demo as harness
from avpea_dist.data import manifest as manifest_mod

MANIFEST = {"splits": {"train": {"segment_histogram": [10, 30]}, "test": {"segment_histogram": [4, 6]}}}
AV = {0: 0.90, 1: 0.80, 2: 0.85}


@pytest.fixture
def fake_training(monkeypatch, tmp_path):
    calls = []

    def prepare(out, settings, cfg, clips, seed):
        calls.append(("data", seed))
        return out / "data" / "raw", out / "data" / "shards"

    def train(config, run_dir, shards, seed, nproc, overrides):
        calls.append(("train", run_dir.relative_to(tmp_path).as_posix(), seed))
        if seed == 2:
            raise RuntimeError("training av_pea failed (exit 1); full log in ...")
        acc = AV[seed] if "model.modalities=av" in overrides else 0.3
        result = {"status": "finished", "task": "avel", "test_accuracy": acc, "best_val_accuracy": acc,
                  "best_step": 4, "step": 4, "train_seconds": 1.0, "wall_seconds": 1.0, "run_dir": str(run_dir),
                  "software": {"python": "3.11.7", "packages": {"torch": "2.9.1"}}}
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "result.json").write_text(json.dumps(result))
        return result

    monkeypatch.setattr(harness, "prepare_data", prepare)
    monkeypatch.setattr(harness, "train_variant", train)
    monkeypatch.setattr(manifest_mod, "read_manifest", lambda shards: MANIFEST)
    return calls


def test_two_seeds_give_mean_std_and_n_on_one_data_set(fake_training, tmp_path, capsys):
    summary = harness.run_task_demo("avel", tmp_path, seed=7, seeds=[0, 1])
    assert fake_training[0] == ("data", 7) and [c for c in fake_training if c[0] == "data"] == [("data", 7)]
    assert ("train", "seeds/seed-1/runs/av_pea", 1) in fake_training
    got = summary["across_seeds"]["test_accuracy.av_pea"]
    assert got["n"] == 2 and math.isclose(got["mean"], 0.85) and math.isclose(got["std"], statistics.stdev([0.9, 0.8]))
    assert summary["ok"] and summary["seeds"] == [0, 1] and summary["failed_seeds"] == {}
    assert json.loads((tmp_path / "summary.json").read_text())["n"] == 2
    assert summary["software"]["packages"] == {"torch": "2.9.1"}  # what produced the numbers
    assert (tmp_path / "seeds" / "seed-0" / "summary.json").is_file()
    printed = capsys.readouterr().out
    assert f"0.8500 ± {statistics.stdev([0.9, 0.8]):.4f} (n=2)" in printed


def test_a_failed_seed_is_named_and_the_others_still_count(fake_training, tmp_path, capsys):
    summary = harness.run_task_demo("avel", tmp_path, seeds=[0, 2, 1])
    assert not summary["ok"] and list(summary["failed_seeds"]) == ["2"]
    assert "exit 1" in summary["failed_seeds"]["2"] and summary["n"] == 2
    assert summary["across_seeds"]["test_accuracy.av_pea"]["n"] == 2
    printed = capsys.readouterr().out
    assert "seed 2 FAILED" in printed and "seed 2 failed" in printed and "(n=2)" in printed


def test_a_seeds_folder_of_another_task_is_refused(tmp_path):
    run = tmp_path / "seeds" / "seed-0" / "runs" / "av_pea"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"status": "finished", "task": "avel"}))
    with pytest.raises(ValueError, match="a run of task 'avel'"):
        harness.check_out(tmp_path, "retrieval", "valor")
