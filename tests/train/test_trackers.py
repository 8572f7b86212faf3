"""train.loggers: Weights & Biases (offline) and MLflow (a local file store) get every metrics line beside
metrics.jsonl and TensorBoard; neither is imported unless named; a missing one is the pip line; a resumed run
continues the same tracker runs."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from avpea_dist.config import ConfigError
from avpea_dist.train import trackers
from avpea_dist.train.metrics import read_jsonl

from trainkit import REPO, MemoryData, tiny_config


def test_an_unknown_logger_is_a_config_error():
    with pytest.raises(ConfigError, match="train.loggers"):
        tiny_config("train.loggers=[tensorboard,neptune]")


def test_a_missing_tracker_package_gives_the_pip_line(monkeypatch):
    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None if name == "mlflow" else real(name))
    with pytest.raises(ConfigError, match=r"pip install mlflow"):
        trackers.check_installed(["tensorboard", "mlflow"])
    trackers.check_installed(["tensorboard", "wandb"])


@pytest.mark.slow
def test_no_tracker_package_is_imported_unless_named(tmp_path):
    code = ("import sys; from pathlib import Path; from avpea_dist.train.trackers import Trackers; "
            f"t = Trackers(['tensorboard'], Path({str(tmp_path)!r}), None, {{}}, 'p'); "
            "t.log({'step': 1, 'split': 'train', 'loss': 0.5}); t.close(); "
            "print(sorted(m for m in ('wandb', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                         env={**__import__("os").environ, "PYTHONPATH": REPO})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]" and list((tmp_path / "tb").iterdir())


def wandb_history(path: Path) -> list[dict]:
    """The history rows of a W&B offline run file (LevelDB-style log blocks of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, rows, pending = path.read_bytes(), 7, [], b""
    block = 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            continue
        pending += chunk
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


@pytest.mark.slow
def test_wandb_and_mlflow_get_every_metrics_line_and_a_resume_continues_their_runs(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from avpea_dist.runtime import preempt
    from avpea_dist.train.run import run_training

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    # A local store under tmp_path: SQLite, since MLflow 3 refuses new file stores (./mlruns) by default.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    out = tmp_path / "run"

    def cfg():
        return tiny_config(f"train.out={out}", "train.steps=4", "train.eval_every=2", "train.ckpt_every=2",
                           "train.log_every=1", "train.loggers=[tensorboard,wandb,mlflow]",
                           "train.tracker_project=avpea-test")

    def stop(step, metrics):
        preempt.request_stop("test")

    first = run_training(cfg(), on_eval=stop, data=MemoryData(cfg(), 0))
    assert first["status"] == "preempted"
    ids = json.loads((out / "trackers.json").read_text())
    second = run_training(cfg(), data=MemoryData(cfg(), 0))
    assert second["status"] == "finished"
    assert json.loads((out / "trackers.json").read_text()) == ids  # the same tracker runs, continued

    lines = read_jsonl(out / "metrics.jsonl")
    train_steps = sorted({r["step"] for r in lines if r.get("split") == "train"})
    val = {r["step"]: r["accuracy"] for r in lines if r.get("split") == "val"}
    client = MlflowClient()
    run = client.get_run(ids["mlflow"])
    assert run.info.status == "FINISHED" and run.data.params["train.steps"] == "4"
    assert client.get_experiment(run.info.experiment_id).name == "avpea-test"
    history = client.get_metric_history(ids["mlflow"], "val/accuracy")
    assert {m.step: m.value for m in history} == pytest.approx(val)
    assert sorted({m.step for m in client.get_metric_history(ids["mlflow"], "train/loss")}) == train_steps

    runs = list(out.glob("wandb/offline-run-*"))
    assert len(runs) == 2 and all(p.name.endswith(ids["wandb"]) for p in runs)  # one W&B id, two starts
    history = [row for p in sorted(runs) for f in p.glob("run-*.wandb") for row in wandb_history(f)]
    logged_val = {r["_step"]: r["val/accuracy"] for r in history if "val/accuracy" in r}
    assert logged_val == pytest.approx(val)
    assert train_steps == sorted({r["_step"] for r in history if "train/loss" in r})
    assert "WANDB_API_KEY" not in (out / "config.yaml").read_text()
