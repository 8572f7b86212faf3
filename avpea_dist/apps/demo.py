"""`avpea demo --task NAME`: a task's whole system on a laptop-sized problem, in minutes, on CPU.

``run_task_demo`` dispatches to ``avpea_dist.tasks.<name>.demo:run_demo(out, *, seed, nproc, overrides,
config)``, which synthesises the task's embedded dataset, trains its variants and writes ``OUT/summary.json``.
The pieces every task's demo shares live here:

* ``train_variant``: one training run with ``nproc`` torchrun ranks (a finished run folder is reused, its
  log relayed to the terminal line by line, Ctrl-C turned into ``DemoInterrupted``);
* ``default_config``: a shipped config by name; ``print_table``: the result table.

A run folder that already finished is reused (``status: finished`` in its result.json), and the data
steps skip work that is done, so rerunning a demo after an interruption continues where it stopped.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from ..runtime import startup
from ..fileio import atomic_write_json


class DemoInterrupted(Exception):
    """Ctrl-C (or SIGTERM) during a run: the run saved a checkpoint; rerunning the demo continues."""


def run_task_demo(task: str, out: str | Path, *, seed: int = 0, nproc: int = 2,
                  overrides: list[str] | tuple[str, ...] = (), config: str | Path | None = None,
                  **options: Any) -> dict[str, Any]:
    """``avpea_dist.tasks.<task>.demo:run_demo`` with the common arguments and the task's own ``options``
    (e.g. AVEL's ``clips``; an option the task's demo does not take is an error naming it)."""
    from ..tasks.registry import task_names

    if task not in task_names():
        raise ValueError(f"--task {task!r}: choose one of {', '.join(task_names())}")
    try:
        module = importlib.import_module(f"avpea_dist.tasks.{task}.demo")
    except ModuleNotFoundError as e:
        if e.name not in (f"avpea_dist.tasks.{task}.demo", f"avpea_dist.tasks.{task}"):
            raise
        raise ValueError(f"the {task} demo is not available in this version (no avpea_dist/tasks/{task}/demo.py); "
                         f"demos available: {', '.join(available_demos())}") from None
    run_demo = module.run_demo
    accepted = inspect.signature(run_demo).parameters
    extra = [k for k in options if k not in accepted]
    if extra:
        raise ValueError(f"--{extra[0]} is not an option of the {task} demo")
    return run_demo(Path(out), seed=seed, nproc=nproc, overrides=list(overrides), config=config, **options)


def available_demos() -> list[str]:
    from ..tasks.registry import task_names

    here = Path(__file__).resolve().parent.parent / "tasks"
    return [t for t in task_names() if (here / t / "demo.py").is_file()]


def default_config(name: str) -> Path:
    """A shipped config (configs/NAME.yaml) by name."""
    from ..presets import find_config

    path = find_config(name)
    if not path.is_file():
        raise FileNotFoundError(f"the shipped config {name}.yaml is missing from this install; pass --config PATH")
    return path


def train_variant(config: str | Path, run_dir: Path, shards: Path, seed: int, nproc: int,
                  overrides: Iterable[str]) -> dict[str, Any]:
    """One run of ``config`` on ``shards`` into ``run_dir`` with ``nproc`` torchrun ranks and the dotted
    ``overrides`` (e.g. model.modalities=audio); -> its result.json (plus ``wall_seconds``, or ``reused``
    when the folder held a finished run). The run's own messages go to the terminal, everything to
    ``<run_dir>.log``."""
    result_path = run_dir / "result.json"
    if result_path.is_file():
        done = json.loads(result_path.read_text())
        if done.get("status") == "finished":
            print(f"{run_dir.name}: reusing the finished run in {run_dir}", flush=True)
            return {**done, "reused": True}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port",
           str(startup.free_port()), "-m", "avpea_dist.train.entry", str(config), f"data.shards={shards}",
           f"train.out={run_dir}", f"train.seed={seed}", *overrides]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cpus // nproc)), "DS_ACCELERATOR": startup.choose_accelerator()}
    print(f"\n== {run_dir.name}: {' '.join(cmd[2:])}", flush=True)
    t = time.perf_counter()
    log = run_dir.parent / f"{run_dir.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        try:
            _relay(proc, f, run_dir.name)
        except KeyboardInterrupt:  # Ctrl-C reached torchrun and its ranks too: they save, then exit
            f.write(proc.stdout.read())
            proc.wait()
            raise DemoInterrupted(f"{run_dir.name} stopped (Ctrl-C) with a checkpoint saved; rerun the same "
                                  f"`avpea demo` to continue") from None
        rc = proc.wait()
    seconds = time.perf_counter() - t
    if rc != 0 or not result_path.is_file():
        tail = log.read_text(errors="replace")[-2500:]
        raise RuntimeError(f"training {run_dir.name} failed (exit {rc}); full log in {log}:\n{tail}")
    result = json.loads(result_path.read_text())
    result["wall_seconds"] = round(seconds, 1)
    atomic_write_json(result_path, result)
    sel = result.get("selection_metric", "accuracy")
    print(f"{run_dir.name}: test {sel} {_fmt(result.get('test_score'))} (best val {_fmt(result.get('best_val_score'))} "
          f"at step {result['best_step']}), {seconds:.0f} s", flush=True)
    return result


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.4f}"


def _relay(proc: subprocess.Popen, log: Any, name: str) -> None:
    """Everything to the log; the terminal gets the run's own messages (evaluations, stops, errors)."""
    for line in proc.stdout:
        log.write(line)
        text = line.decode(errors="replace").split("\r")[-1].strip()  # after a progress bar redraw
        if text.startswith(("step ", "avpea train", "stopping at step")):
            print(f"  {name}: {text}", flush=True)


def print_table(title: str, rows: list[tuple[str, float | None]], *, percent: bool = True, width: int = 32) -> None:
    """``title`` then one line per (name, value): a fraction shown in percent, or a plain number."""
    print(f"\n{title}")
    for name, value in rows:
        shown = "n/a" if value is None else f"{100 * value:6.2f} %" if percent else f"{value:8.4f}"
        print(f"  {name:<{width}} {shown}")


def print_timing(summary: dict[str, Any]) -> None:
    """The demo's time line: training + evaluation (or which finished runs were reused), data preparation."""
    reused = summary.get("reused_runs", [])
    if len(reused) == len(summary["runs"]):
        print(f"training + evaluation: reused the {len(reused)} finished runs (nothing trained; delete the run "
              f"folders or pass another --out to train again)")
    else:
        note = f"; reused {', '.join(reused)}" if reused else ""
        print(f"training + evaluation: {summary['train_seconds']:.0f} s{note} (data synthesis and shards: "
              f"{summary['data_seconds']:.0f} s)")


def run_demo(out: str | Path = "runs/demo", *, config: str | Path | None = None, seed: int = 0, clips: int = 0,
             nproc: int = 2, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The AVEL demo (``avpea demo`` without --task), by its pre-plug-in name."""
    from ..tasks.avel.demo import run_demo as avel_demo

    return avel_demo(out, config=config, seed=seed, clips=clips, nproc=nproc, overrides=overrides)
