"""Experiment trackers beside metrics.jsonl: TensorBoard (the default), Weights & Biases and MLflow, chosen by
``train.loggers``. Each gets every scalar of every metrics line under ``<split>/<name>`` at its step.

A tracker's package is imported only when the config names it; a named one that is not installed stops the
run on every rank at start (before any training) with the pip line that brings it. TensorBoard keeps its
old leniency: a broken install still trains. A resumed run continues the same W&B / MLflow run (their ids
are kept in ``RUN/trackers.json``); unlike TensorBoard's ``purge_step``, they cannot drop the steps between
the checkpoint and the interruption, so those steps appear twice there (metrics.jsonl stays exact).
Credentials come from the trackers' own environment variables (WANDB_API_KEY, MLFLOW_TRACKING_URI ...) and
are never written to the run folder.
"""

from __future__ import annotations

import importlib.util
import json
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError
from ..fileio import atomic_write_json

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
"""Tracker name -> the module it needs (its pip name too)."""

IDS_FILE = "trackers.json"


def check_installed(names: list[str] | tuple[str, ...]) -> None:
    """A ``ConfigError`` with the pip line when a named tracker's package is missing (without importing it)."""
    for name in names:
        if name not in PACKAGES:
            raise ConfigError(f"train.loggers: unknown logger {name!r}; choose from {', '.join(PACKAGES)}")
    missing = [PACKAGES[n] for n in names if n != "tensorboard" and importlib.util.find_spec(PACKAGES[n]) is None]
    if missing:
        raise ConfigError(f"train.loggers names {', '.join(missing)}, which is not installed; "
                          f"pip install {' '.join(missing)}  (or drop it from train.loggers)")


def flat_config(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys, values JSON-friendly (lists as their JSON text)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, Mapping):
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)
    return out


class _TensorBoard:
    def __init__(self, run_dir: Path, resume_step: int | None, **_: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step)

    def log(self, scalars: dict[str, float], step: int) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, run_dir: Path, resume_step: int | None, *, project: str, run_id: str, config: dict) -> None:
        import wandb

        # resume="allow": a resumed run (same id, from RUN/trackers.json) continues the same W&B run.
        self.run = wandb.init(project=project, name=run_dir.name, id=run_id, resume="allow", dir=str(run_dir),
                              config=config)

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


class _Mlflow:
    def __init__(self, run_dir: Path, resume_step: int | None, *, project: str, run_id: str | None,
                 config: dict) -> None:
        from mlflow.tracking import MlflowClient

        # The client, not mlflow's global active run: the tracking URI is mlflow's own (MLFLOW_TRACKING_URI or
        # its default), and nothing else in the process is affected.
        self.client = MlflowClient()
        self.run_id = run_id
        if run_id is None:
            exp = self.client.get_experiment_by_name(project)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(project)
            self.run_id = self.client.create_run(exp_id, run_name=run_dir.name).info.run_id
            from mlflow.entities import Param

            params = [Param(k, str(v)[:6000]) for k, v in flat_config(config).items()]
            for i in range(0, len(params), 100):  # mlflow's batch limit
                self.client.log_batch(self.run_id, params=params[i:i + 100])
        else:
            self.client.update_run(self.run_id, status="RUNNING")

    def log(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in scalars.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class Trackers:
    """The trackers of one run (rank 0). ``log`` takes a metrics line; nested values (gates) are logged by
    ``log_scalars`` under their own names."""

    def __init__(self, names: list[str] | tuple[str, ...], run_dir: Path, resume_step: int | None,
                 config: dict[str, Any], project: str) -> None:
        check_installed(names)
        self.items: list[Any] = []
        ids_path = run_dir / IDS_FILE
        ids = json.loads(ids_path.read_text()) if resume_step is not None and ids_path.is_file() else {}
        for name in names:
            if name == "tensorboard":
                try:
                    self.items.append(_TensorBoard(run_dir, resume_step))
                except ImportError:  # tensorboard is a dependency; a broken install still trains
                    pass
            elif name == "wandb":
                ids.setdefault("wandb", uuid.uuid4().hex[:16])
                self.items.append(_Wandb(run_dir, resume_step, project=project, run_id=ids["wandb"], config=config))
            elif name == "mlflow":
                tracker = _Mlflow(run_dir, resume_step, project=project, run_id=ids.get("mlflow"), config=config)
                ids["mlflow"] = tracker.run_id
                self.items.append(tracker)
        if ids:
            atomic_write_json(ids_path, ids)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        if scalars:
            for t in self.items:
                t.log(scalars, step)

    def log(self, record: dict[str, Any]) -> None:
        prefix = record.get("split", "train")
        self.log_scalars({f"{prefix}/{k}": v for k, v in record.items()
                          if k not in ("step", "split", "time") and isinstance(v, (int, float)) and v == v},
                         record["step"])

    def close(self) -> None:
        for t in self.items:
            t.close()
