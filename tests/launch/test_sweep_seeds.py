"""`avpea sweep --seeds`: every point once per seed, reported per point as mean ± std with n; a failed seed is
named and the others still count. The report is tested on trial files as a sweep leaves them (the real Ray
sweep is tests/launch/test_sweep.py and the slow test at the end)."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from avpea_dist.launch import commands, sweep_report
from avpea_dist.launch.sweep_points import grid, point_key
from avpea_dist.launch.sweep_seeds import across, parse_seeds, spread

BASE = {"task": "avel", "model": {"bottleneck": 8}, "train": {"seed": 0, "out": ""}, "data": {"shards": "nowhere"}}


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="cmd"))
    return parser.parse_args(["sweep", "configs/avel_tiny.yaml", *argv])


def test_seeds_become_the_last_axis_and_fifo_the_default_scheduler():
    spec = commands._sweep_spec(_parse(["--bottleneck", "8,16", "--seeds", "0,1,2"]))
    assert spec.axes == {"model.bottleneck": [8, 16], "train.seed": [0, 1, 2]}
    assert spec.scheduler == "fifo" and spec.name == "avel_tiny_bottleneck_seed"
    assert [point_key(p) for p in grid(spec.axes)][:3] == ["bottleneck-8__seed-0", "bottleneck-8__seed-1",
                                                           "bottleneck-8__seed-2"]
    assert commands._sweep_spec(_parse(["--bottleneck", "8", "--seeds", "0,1", "--scheduler", "asha"])).scheduler \
        == "asha"
    assert commands._sweep_spec(_parse(["--bottleneck", "8"])).scheduler == "asha"  # unchanged without seeds
    with pytest.raises(ValueError, match="--seeds and --axis train.seed"):
        commands._sweep_spec(_parse(["--seeds", "0,1", "--axis", "train.seed=3,4"]))
    for bad in ("0,0", "a,1", "-1", ""):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)


def test_spread_is_mean_sample_std_and_n_of_the_numbers_given():
    s = spread([0.8, 0.7, None, float("nan"), 0.9])
    assert s.n == 3 and math.isclose(s.mean, 0.8) and math.isclose(s.std, statistics.stdev([0.8, 0.7, 0.9]))
    assert s.text(percent=True) == "80.00% ± 10.00 (n=3)" and spread([0.5]).text() == "0.5000 (n=1)"
    assert spread([]).text() == "- (n=0)" and spread([300, 300]).text() == "300 (n=2)"
    both = across([{"acc": {"av": 0.5, "a": 0.2}, "k": "text"}, {"acc": {"av": 0.7}}])
    assert list(both) == ["acc.av", "acc.a"] and both["acc.av"].n == 2 and both["acc.a"].n == 1


def _trial(folder: Path, point: dict, status: str, best: float | None, test: float | None) -> None:
    (folder / "trials").mkdir(parents=True, exist_ok=True)
    state = {"point": point, "status": status, "step": 4 if status == "finished" else 2, "wall_time_s": 3.0,
             "best_val_accuracy": best, "best_val_score": best, "nodes": [{"host": "h", "ray_node_id": "ab" * 28}]}
    if status == "finished":
        state.update(test_score=test, final_metrics={"test_accuracy": test, "test_event_accuracy": test / 2},
                     software={"python": "3.11.7", "packages": {"torch": "2.9.1"}})
    (folder / "trials" / f"{point_key(point)}.json").write_text(json.dumps(state))


def test_report_per_point_over_seeds_names_a_failed_seed_and_keeps_the_others(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_report, "_param_counts", lambda cfg: {
        "adapter_params": 1000 * cfg.model.bottleneck, "trainable_params": 1100 * cfg.model.bottleneck,
        "trainable_share": 0.01})
    axes = {"model.bottleneck": [8, 16], "train.seed": [0, 1, 2]}
    points = grid(axes)
    scores = {(8, 0): 0.60, (8, 1): 0.70, (8, 2): 0.65, (16, 0): 0.80, (16, 1): 0.90}
    for p in points:
        got = scores.get((p["model.bottleneck"], p["train.seed"]))
        if got is None:
            (tmp_path / "trials").mkdir(exist_ok=True)  # seed 2 of bottleneck 16 crashed before its first eval
            continue
        _trial(tmp_path, p, "finished", got, got - 0.05)
    failed = SimpleNamespace(config={"model.bottleneck": 16, "train.seed": 2}, error=RuntimeError("boom"))
    rows = sweep_report.collect_rows(tmp_path, BASE, points, [failed])
    assert [r["status"] for r in rows] == ["finished"] * 5 + ["failed"]
    assert list(rows[0])[:8] == ["bottleneck", "seed", "adapter_params", "trainable_params", "trainable_share",
                                 "best_val_accuracy", "test_accuracy", "test_event_accuracy"]
    files = sweep_report.write_outputs(tmp_path, rows, list(axes))

    with open(files["points"]) as f:
        by_point = {int(r["bottleneck"]): r for r in csv.DictReader(f)}
    assert math.isclose(float(by_point[8]["best_val_accuracy_mean"]), 0.65)
    assert math.isclose(float(by_point[8]["best_val_accuracy_std"]), statistics.stdev([0.6, 0.7, 0.65]))
    assert math.isclose(float(by_point[16]["test_accuracy_mean"]), 0.80)
    assert math.isclose(float(by_point[16]["test_accuracy_std"]), statistics.stdev([0.75, 0.85]))
    assert (by_point[8]["n"], by_point[16]["n"], by_point[16]["seeds"]) == ("3", "2", "3")
    assert by_point[16]["status"] == "2/3 finished; seed 2 failed"
    with open(files["csv"]) as f:
        assert len(list(csv.DictReader(f))) == 6  # every trial kept as it ran

    md = files["md"].read_text()
    assert "| bottleneck | adapter_params | trainable_params | trainable_share | best_val_accuracy |" in md
    assert f"| 65.00% ± {100 * statistics.stdev([0.6, 0.7, 0.65]):.2f} |" in md
    assert "| 2 | 3 | 2/3 finished; seed 2 failed |" in md and "## Per trial" in md
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (software,) = json.loads(files["software"].read_text())  # one record: every trial ran on the same
    assert software["software"]["packages"] == {"torch": "2.9.1"} and len(software["trials"]) == 5


def test_without_seeds_the_report_is_one_row_per_point_as_before(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_report, "_param_counts", lambda cfg: {
        "adapter_params": 10, "trainable_params": 11, "trainable_share": 0.5})
    points = grid({"model.bottleneck": [8]})
    _trial(tmp_path, points[0], "finished", 0.5, 0.4)
    rows = sweep_report.collect_rows(tmp_path, BASE, points, [])
    files = sweep_report.write_outputs(tmp_path, rows, ["model.bottleneck"])
    assert "points" not in files and files["md"].read_text().startswith("| bottleneck | adapter_params |")
    assert rows[0]["test_accuracy"] == 0.4


@pytest.mark.slow
def test_a_real_sweep_with_two_seeds_reports_mean_and_std(synth_shards, tmp_path):
    cmd = [sys.executable, "-m", "avpea_dist.cli", "sweep", "configs/avel_tiny.yaml", f"data.shards={synth_shards}",
           "model.img_size=32", "train.steps=2", "train.eval_every=2", "train.ckpt_every=2", "data.batch_size=2",
           "data.num_workers=0", "eval.batch_size=4", "--bottleneck", "8", "--seeds", "0,1", "--num-cpus", "2",
           "--name", "seeds", "--root", str(tmp_path)]
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_AUTH_MODE="disabled")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    with open(tmp_path / "seeds" / "results_by_point.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["n"] == "2" and row["status"] == "2/2 finished"
    trials = [json.loads((tmp_path / "seeds" / "trials" / f"bottleneck-8__seed-{s}.json").read_text()) for s in (0, 1)]
    tests = [t["final_metrics"]["test_accuracy"] for t in trials]
    assert math.isclose(float(row["test_accuracy_mean"]), statistics.fmean(tests))
    assert math.isclose(float(row["test_accuracy_std"]), statistics.stdev(tests))
    assert "per point, over seeds" in done.stdout and "±" in done.stdout
