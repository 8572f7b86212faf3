"""Ray Tune sweeps: one full training run per grid point (bottleneck size, learning rates ...).

Layout of a sweep folder ``ROOT/NAME`` (also Ray Tune's experiment folder, so ``Tuner.restore`` finds it):

- ``sweep.json``: the base config and the axes; a rerun under the same name must match it.
- ``runs/<point>/``: each trial's run folder. It is the trial's real checkpoint: a retried or restored
  trial calls ``run_training`` on the same folder, which resumes from its newest checkpoint. The Ray
  checkpoint reported at every evaluation is a small record (run folder, step, wall time so far), so
  nothing heavy is copied into Ray's storage.
- ``trials/<point>.json``: progress written by the trial at every evaluation and at its end.
- ``results.csv``, ``results.md``, ``accuracy_vs_params.png``: the table and the plot, at the end.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from ..runtime import startup
from ..config import Config
from ..extras import require
from ..fileio import atomic_write_json
from .sweep_points import grid, point_key, selection_metric, trial_config

log = logging.getLogger(__name__)

SCHEDULERS = ("asha", "fifo")
METRIC = "val_score"
"""What Tune maximises: the val value of the task's selection metric (also reported under its own name,
``val_<metric>``)."""


def _scalar(text: str) -> Any:
    # int and float first: YAML 1.1 reads '1e-3' (no dot) as a string.
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def parse_values(flag: str, text: str) -> list[Any]:
    """``'16,32,64'`` -> ``[16, 32, 64]``; ``'1e-3,5e-4'`` -> floats; anything else is read as YAML."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ValueError(f"{flag} needs a comma-separated list of values, e.g. {flag} 16,32,64")
    values = [_scalar(t) for t in items]
    if len({json.dumps(v) for v in values}) != len(values):
        raise ValueError(f"{flag} {text!r} repeats a value")
    return values


@dataclass
class SweepSpec:
    axes: dict[str, list[Any]]
    """Dotted config key -> values; the grid is their product."""
    name: str
    root: str = "runs/sweeps"
    scheduler: str = "asha"
    gpus_per_trial: int = 0
    """GPUs per trial: 0 or 1 trains in the trial's process; K > 1 starts K ranks with Ray Train."""
    workers_per_trial: int = 0
    """Ranks per trial on CPU (Ray Train when > 1); 0 means one rank per GPU, or 1 without GPUs."""
    cpus_per_trial: int = 1
    """CPUs per rank."""
    max_concurrent: int = 0
    """0: as many trials at once as the cluster's resources allow."""
    max_failures: int = 2
    """Retries of a failed trial, each resuming from its run folder."""

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"--scheduler {self.scheduler!r} is unknown; choose one of {', '.join(SCHEDULERS)}")
        if not self.axes:
            raise ValueError("a sweep needs at least one axis, e.g. --bottleneck 16,32,64")
        if not re.fullmatch(r"[\w.+-]+", self.name):
            raise ValueError(f"--name {self.name!r} may hold only letters, digits and . _ + -")
        for flag, value, low in (("--gpus-per-trial", self.gpus_per_trial, 0), ("--cpus-per-trial",
                                 self.cpus_per_trial, 1), ("--max-concurrent", self.max_concurrent, 0),
                                 ("--workers-per-trial", self.workers_per_trial, 0),
                                 ("--max-failures", self.max_failures, 0)):
            if value < low:
                raise ValueError(f"{flag} must be >= {low}, got {value}")

    @property
    def workers(self) -> int:
        return self.workers_per_trial or max(1, self.gpus_per_trial)

    @property
    def folder(self) -> Path:
        return Path(self.root).expanduser().absolute() / self.name


def absolute_paths(cfg: Config) -> dict[str, Any]:
    """Ray runs trials in their own working folders (and jobs start on other nodes): every path in the config
    absolute, by the trainer's own rule (shards, run folder, resume, weights and the task's model folders)."""
    from ..train.runsetup import absolute_paths as resolved  # torch: only where a sweep or job is made

    return resolved(cfg).to_dict()


def _update(path: Path, **fields: Any) -> dict[str, Any]:
    state = json.loads(path.read_text()) if path.is_file() else {}
    state.update(fields)
    atomic_write_json(path, state)
    return state


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (int, float, str, bool)):
            out[k] = v
        elif hasattr(v, "item"):  # a 0-d tensor or numpy scalar
            out[k] = v.item()
    return out


def _val_metrics(record: dict[str, Any], metric: str) -> dict[str, Any]:
    """A val record from the loop ({'split': 'val', <metric>: ...}) as val_* metrics for Tune, the task's
    selection ``metric`` also as ``val_score``."""
    if METRIC in record or record.get("split") != "val":
        return record
    out = {(k if k.startswith(("val_", "best_val_")) or k in ("step", "time") else f"val_{k}"): v
           for k, v in record.items() if k != "split"}
    if metric in record:
        out[METRIC] = record[metric]
    return out


def _placement(run_dir: Path) -> dict[str, Any]:
    """Where this start of a trial runs: its Ray node, that node's Slurm name (or host), and the step of the
    run folder's newest checkpoint, which the run resumes from (Tune's own record of the trial's checkpoint
    may lag behind it after a driver restart). Ray nodes sharing one machine differ only in their node id."""
    import ray

    from ..train.checkpoint import complete_tags
    from .executor import node_name

    tags = complete_tags(run_dir / "checkpoints")
    return {"ray_node_id": ray.get_runtime_context().get_node_id(), "host": node_name(),
            "from_step": tags[-1][0] if tags else 0}


def train_trial(point: dict[str, Any], *, base: dict[str, Any], sweep_dir: str, workers: int = 1,
                use_gpu: bool = False, cpus_per_worker: int = 1) -> None:
    """One Tune trial: a full ``run_training``, in this process (one rank: CPU or one GPU) or on
    ``workers`` ranks started by Ray Train."""
    from ray import tune

    from ..train.run import run_training

    folder = Path(sweep_dir)
    cfg = trial_config(base, point, folder)
    key = point_key(point)
    status = folder / "trials" / f"{key}.json"
    prior_wall = 0.0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            record = json.loads((Path(d) / "trial.json").read_text())
        prior_wall = float(record["wall_time_s"])
        log.info("trial %s resumes from %s (step %s)", key, record["run_dir"], record["step"])
    state = json.loads(status.read_text()) if status.is_file() else {}
    if state.get("status") == "finished":
        # It finished before the driver died, but Tune's snapshot (taken every ~10 s) missed it.
        log.info("trial %s already finished at step %s; not rerun", key, state.get("step"))
        return
    _update(status, point=point, run_dir=cfg.train.out, status="running", starts=state.get("starts", 0) + 1,
            nodes=[*state.get("nodes", []), _placement(Path(cfg.train.out))])

    t0 = time.time()
    metric = selection_metric(cfg.task)
    best_names = ("best_val_score", f"best_val_{metric}")  # a fixed name, and the metric's own
    best = {"val": float(state.get("best_val_score", state.get(best_names[1], float("-inf"))))}

    def on_eval(step: int, metrics: dict[str, Any]) -> None:
        metrics = _val_metrics(_plain(metrics), metric)
        if METRIC not in metrics or metrics[METRIC] is None:
            raise KeyError(f"the training loop reported no {metric!r} (task {cfg.task}'s selection metric; "
                           f"got {sorted(metrics)})")
        wall = prior_wall + time.time() - t0
        best["val"] = max(best["val"], float(metrics[METRIC]))
        bests = dict.fromkeys(best_names, best["val"])
        _update(status, step=step, wall_time_s=wall, **bests, last_metrics=metrics)
        with tempfile.TemporaryDirectory() as d:
            atomic_write_json(Path(d) / "trial.json", {"run_dir": cfg.train.out, "step": step, "wall_time_s": wall})
            tune.report({**metrics, "step": step, "wall_time_s": wall, **bests},
                        checkpoint=tune.Checkpoint.from_directory(d))

    if workers > 1:
        from .sweep_ray_train import run_workers

        result = run_workers(cfg.to_dict(), workers, use_gpu, cpus_per_worker, on_eval, folder / "ray_train", key)
    else:
        # A world of one, whatever Slurm variables the node carries; a fresh port, since trials share a node.
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(startup.free_port()))
        startup.start_process()
        result = run_training(cfg, on_eval=on_eval)
    final = _final_metrics(result)
    software = result.get("software")
    result = _plain(result)
    if result.get("status") != "finished":
        # Stopped by a signal before its last step (checkpoint saved): fail, so that Tune retries the trial
        # from its run folder instead of counting it as done.
        raise RuntimeError(f"trial {key} stopped at step {result.get('step')} ({result.get('status')}); "
                           f"it resumes from {cfg.train.out} when retried")
    final_best = result.get("best_val_score", best["val"])
    _update(status, status="finished", step=result.get("step"), wall_time_s=prior_wall + time.time() - t0,
            **dict.fromkeys(best_names, final_best), test_score=result.get("test_score"),
            **{f"test_{metric}": result.get("test_score")}, final_metrics=final,
            **({"software": software} if isinstance(software, dict) else {}))


def _final_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The final split's scalar metrics of a finished run (``test_accuracy``...), for the sweep's table; the
    counts of clips scored and skipped are the split's size, not a score."""
    split = result.get("final_split")
    scores = _plain(result.get("test_metrics") or {})
    return {f"{split}_{k}": v for k, v in scores.items() if k not in ("samples", "skipped") and split != "none"}


def _check_same_sweep(folder: Path, spec_record: dict[str, Any]) -> None:
    saved_path = folder / "sweep.json"
    if not saved_path.is_file():
        return
    saved = json.loads(saved_path.read_text())
    for part in ("axes", "base"):
        if saved.get(part) != spec_record[part]:
            raise ValueError(f"sweep '{folder.name}' in {folder.parent} was started with other {part} "
                             f"({saved_path}); rerun it with the same config and axes to continue it, "
                             f"or give a new --name")


def run_sweep(cfg: Config, spec: SweepSpec, *, address: str | None = None,
              num_cpus: int | None = None) -> dict[str, Any]:
    """Run (or continue) the sweep; returns the table rows and the files written."""
    require("sweep", "a Ray Tune sweep")
    base = absolute_paths(cfg)
    folder = spec.folder
    points = grid(spec.axes)
    for point in points:  # every grid point must be a valid config before anything starts
        trial_config(base, point, folder)
    record = {"axes": spec.axes, "base": base, "spec": asdict(spec)}
    _check_same_sweep(folder, record)
    import ray
    from ray import tune

    from .sweep_report import collect_rows, write_outputs

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
             log_to_driver=True)
    try:
        atomic_write_json(folder / "sweep.json", record)
        fn = tune.with_parameters(train_trial, base=base, sweep_dir=str(folder), workers=spec.workers,
                                  use_gpu=spec.gpus_per_trial > 0, cpus_per_worker=spec.cpus_per_trial)
        # A multi-rank trial only waits on its Ray Train workers, which ask for the CPUs and GPUs; Ray
        # refuses an empty request, so the trial takes a token share of one CPU.
        resources = ({"cpu": 0.01} if spec.workers > 1 else {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial})
        trainable = tune.with_resources(fn, resources)
        if tune.Tuner.can_restore(str(folder)):
            log.info("continuing sweep %s from %s", spec.name, folder)
            tuner = tune.Tuner.restore(str(folder), trainable=trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            tuner = tune.Tuner(trainable, param_space={k: tune.grid_search(v) for k, v in spec.axes.items()},
                               tune_config=_tune_config(cfg, spec), run_config=_run_config(spec))
        grid_result = tuner.fit()
    finally:
        ray.shutdown()
    rows = collect_rows(folder, base, points, grid_result)
    return {"folder": folder, "rows": rows, "files": write_outputs(folder, rows, list(spec.axes))}


def _tune_config(cfg: Config, spec: SweepSpec) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    evals = max(1, cfg.train.steps // cfg.train.eval_every)
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=evals, grace_period=1, reduction_factor=2,
                                stop_last_trials=False)  # survivors run to the end: final checkpoint and test
                 if spec.scheduler == "asha" else FIFOScheduler())
    return tune.TuneConfig(metric=METRIC, mode="max", scheduler=scheduler,
                           max_concurrent_trials=spec.max_concurrent or None, reuse_actors=False)


def _run_config(spec: SweepSpec) -> Any:
    from ray import tune

    return tune.RunConfig(name=spec.name, storage_path=str(spec.folder.parent),
                          failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=2), verbose=1)
