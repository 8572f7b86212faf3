"""`avpea demo --task NAME`: a task's whole system on a laptop-sized problem, in minutes, on CPU.

One ablation harness for every task. A task's demo is its settings (``tasks.demo_settings.DemoSettings``, named
by its ``TaskSpec.demo``): the shipped config, the registered dataset whose synthetic generator makes the data
and its options, the build options, the variants and the bar. This module does the rest, the same way for
every task, naming none:

1. synthesise the dataset's embedded set and build its shards with the dataset's own builder (the plug-in
   registry's ``SynthSource`` / ``DatasetBuilder``), exactly as its real release would be built;
2. train every variant (AV-PEA, audio only, visual only) with ``nproc`` torchrun ranks;
3. measure, check the bar, print the task's report and write ``OUT/summary.json``; ``ok`` false when a check
   fails (``avpea demo`` then exits 1).

A run folder that already finished is reused (``status: finished`` in its result.json), the synthetic set
is reused when ``OUT/data/demo.json`` records the same dataset and options, and the builders resume their
own work, so rerunning a demo after an interruption continues where it stopped. A folder holding another
task's runs or another dataset's data is refused, never mixed up with this one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .. import plugins
from ..fileio import atomic_write_json
from ..runtime import startup
from ..tasks.demo_settings import DemoOutcome, DemoSettings


class DemoInterrupted(Exception):
    """Ctrl-C (or SIGTERM) during a run: the run saved a checkpoint; rerunning the demo continues."""


def available_demos() -> list[str]:
    """The tasks whose spec names demo settings."""
    return [name for name, spec in plugins.task_specs().items() if spec.demo]


def demo_settings(task: str) -> DemoSettings:
    """The registered task's ``DemoSettings``; a clear error for an unknown task or one without a demo."""
    specs = plugins.task_specs()
    if task not in specs:
        raise ValueError(f"--task {task!r}: choose one of {', '.join(specs)}")
    ref = specs[task].demo
    if ref is None:
        raise ValueError(f"the {task} demo is not available in this version (its TaskSpec names no demo "
                         f"settings); demos available: {', '.join(available_demos())}")
    settings = plugins.load(ref)
    if not isinstance(settings, DemoSettings):
        raise ValueError(f"the {task} task's demo={ref!r} is a {type(settings).__name__}, not a DemoSettings")
    return settings


def default_out(task: str) -> Path:
    return Path(demo_settings(task).out or f"runs/demo_{task}")


def run_task_demo(task: str, out: str | Path | None = None, *, seed: int = 0, nproc: int = 2,
                  overrides: list[str] | tuple[str, ...] = (), config: str | Path | None = None,
                  clips: int = 0, seeds: Sequence[int] = ()) -> dict[str, Any]:
    """The demo of ``task`` into ``out`` (None: the task's default folder) -> its summary (also
    ``OUT/summary.json``). ``clips``: size of the synthetic set (0: the task's default). ``seed`` seeds the
    synthetic set, and the training runs unless ``seeds`` is given: then every variant trains once per seed
    (``OUT/seeds/seed-<s>/``) on the same data and the summary holds each number as mean ± std over the
    seeds that finished (``across_seeds``), a failed seed named in ``failed_seeds``."""
    from ..config_load import load_config
    from ..data.manifest import read_manifest

    settings = demo_settings(task)
    out = Path(out) if out else default_out(task)
    config = Path(config) if config else default_config(settings.config)
    overrides = list(overrides)
    cfg = load_config(config, overrides)  # fail on a bad override before minutes of work
    if cfg.task != task:
        raise ValueError(f"{config} trains task {cfg.task!r}; the {task} demo needs a {task} config")
    clips = clips or settings.clips
    check_out(out, task, settings.dataset)
    t0 = time.perf_counter()
    raw, shards = prepare_data(out, settings, cfg, clips, seed)
    data = {"raw": raw, "shards": shards, "manifest": read_manifest(shards),
            "cfg": load_config(config, [*overrides, f"data.shards={shards}"]), "seconds": time.perf_counter() - t0}
    common = {"task": task, "dataset": settings.dataset, settings.size_key: clips, "ranks": nproc,
              "config": str(config), "overrides": overrides}
    if seeds:
        summary = demo_seeds(settings, config, out, data, list(seeds), seed, nproc, overrides, common)
    else:
        summary, outcome = train_and_measure(settings, config, out, data, seed, nproc, overrides, common)
        print("\n".join(settings.report(summary, outcome)), flush=True)
    atomic_write_json(out / "summary.json", summary)
    if seeds:
        print(f"runs: {out / 'seeds'}/seed-<s>/runs/<variant>; shards: {shards}", flush=True)
    elif settings.next_steps is not None:
        print(settings.next_steps(out, shards), flush=True)
    return summary


def train_and_measure(settings: DemoSettings, config: Path, out: Path, data: dict[str, Any], seed: int, nproc: int,
                      overrides: list[str], common: dict[str, Any]) -> tuple[dict[str, Any], DemoOutcome]:
    """Every variant trained with ``seed`` into OUT/runs/<variant>, measured and checked -> (summary, outcome)."""
    t1 = time.perf_counter()
    results = {name: train_variant(config, out / "runs" / name, data["shards"], seed, nproc, [*variant, *overrides])
               for name, variant in settings.variants.items()}
    train_seconds = time.perf_counter() - t1
    outcome = DemoOutcome(cfg=data["cfg"], out=out, raw=data["raw"], shards=data["shards"],
                          manifest=data["manifest"], results=results)
    summary = {
        **settings.measure(outcome),
        "train_seconds": round(train_seconds, 1),
        "data_seconds": round(data["seconds"], 1),
        "reused_runs": [name for name, r in results.items() if r.get("reused")],
        **common, "seed": seed, "machine": _machine(),
        "runs": {name: {k: r.get(k) for k in settings.run_keys} for name, r in results.items()},
    }
    software = [r["software"] for r in results.values() if isinstance(r.get("software"), dict)]
    if software:  # what produced the numbers (each run's result.json records it)
        summary["software"] = software[0]
    checks = settings.bar(summary, outcome)
    return {"ok": all(checks.values()), "checks": checks, **summary}, outcome


def demo_seeds(settings: DemoSettings, config: Path, out: Path, data: dict[str, Any], seeds: list[int],
               data_seed: int, nproc: int, overrides: list[str], common: dict[str, Any]) -> dict[str, Any]:
    """The demo once per training seed on the same data; one seed failing is recorded and the others still
    count. -> the summary: per seed, and each number the task measures as mean ± sample std and n."""
    from ..launch.sweep_seeds import across

    per_seed: dict[str, dict[str, Any]] = {}
    measured: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    for s in seeds:
        folder = out / "seeds" / f"seed-{s}"
        print(f"\n==== seed {s} ({folder})", flush=True)
        try:
            summary, outcome = train_and_measure(settings, config, folder, data, s, nproc, overrides, common)
        except (RuntimeError, OSError, ValueError, KeyError) as e:  # a failed run: the other seeds still count
            failed[str(s)] = str(e)[-2000:]
            print(f"seed {s} FAILED: {str(e).splitlines()[0] if str(e) else type(e).__name__}", flush=True)
            continue
        atomic_write_json(folder / "summary.json", summary)
        print("\n".join(settings.report(summary, outcome)), flush=True)
        per_seed[str(s)] = summary
        measured.append(settings.measure(outcome))
    spreads = across(measured)
    lines = ["", f"Across seeds {', '.join(map(str, seeds))} (mean ± sample std over the {len(per_seed)} that "
                 f"finished; data seed {data_seed}):"]
    lines += [f"  {k:<40} {v.text()}" for k, v in spreads.items()]
    lines += [f"  seed {s} failed (see {out / 'seeds' / f'seed-{s}'}); not counted" for s in failed]
    lines.append("bar met by " + ", ".join(f"seed {s}: {'yes' if r['ok'] else 'NO'}" for s, r in per_seed.items())
                 if per_seed else "no seed finished")
    print("\n".join(lines), flush=True)
    return {"ok": bool(per_seed) and not failed and all(r["ok"] for r in per_seed.values()),
            "checks": {f"seed_{s}_{name}": v for s, r in per_seed.items() for name, v in r["checks"].items()},
            "seeds": seeds, "n": len(per_seed), "data_seed": data_seed, "failed_seeds": failed,
            "across_seeds": {k: v.as_dict() for k, v in spreads.items()}, **common, "machine": _machine(),
            **({"software": r["software"] for r in per_seed.values() if "software" in r}), "per_seed": per_seed}


def check_out(out: Path, task: str, dataset: str) -> None:
    """Refuse a folder that holds another demo: its finished runs would be taken for ours and its data
    overwritten."""
    hint = f"pass --out to a new folder, e.g. --out runs/demo_{task}"
    data, marker = out / "data", out / "data" / "demo.json"
    if marker.is_file():
        held = _read_json(marker).get("dataset")
        if held != dataset:
            raise ValueError(f"{out} holds another demo's data (dataset {held!r} in {marker}, this demo makes "
                             f"{dataset!r}); {hint}")
    elif data.is_dir() and any(data.iterdir()):
        raise ValueError(f"{out} holds data this demo did not make (no {marker}: another tool's or an older "
                         f"version's); {hint}")
    for result in sorted([*out.glob("runs/*/result.json"), *out.glob("seeds/*/runs/*/result.json")]):
        held = _read_json(result).get("task")
        if held != task:
            what = f"task {held!r}" if held else "an unknown task (no 'task' in its result.json: an older version)"
            raise ValueError(f"{out} holds a run of {what} ({result.parent}); {hint}")


def prepare_data(out: Path, settings: DemoSettings, cfg: Any, clips: int, seed: int) -> tuple[Path, Path]:
    """The dataset's synthetic set in OUT/data/raw and its shards in OUT/data/shards -> (raw, shards). A set
    made with the same options is reused; other options start over; the builder resumes its own work."""
    from ..data.builder import BuildOptions

    spec = plugins.dataset_spec(settings.dataset)
    if spec.synth is None:
        raise ValueError(f"dataset {spec.name!r} has no synthetic generator (DatasetSpec.synth); its demo needs one")
    synth, builder = plugins.load(spec.synth), plugins.load(spec.builder)
    raw, shards, marker = out / "data" / "raw", out / "data" / "shards", out / "data" / "demo.json"
    options = settings.synth(cfg, clips, seed)
    # Frames are stored at the training size: no point decoding large JPEGs to train at 64 px.
    build = {"frame_size": cfg.model.img_size, **settings.build}
    wanted = {"dataset": spec.name, "synth": _plain(options), "build": _plain(build)}
    done = _read_json(marker) if marker.is_file() else {}
    if done.get("synth") != wanted["synth"]:
        shutil.rmtree(raw, ignore_errors=True)
        shutil.rmtree(shards, ignore_errors=True)
    elif done.get("build") != wanted["build"]:
        shutil.rmtree(shards, ignore_errors=True)
    if done.get("synth") == wanted["synth"] and done.get("synthesised"):
        print(f"reusing the synthetic {spec.name} set in {raw}", flush=True)
    else:
        atomic_write_json(marker, {**wanted, "synthesised": False})  # written first: check_out knows the folder
        t = time.perf_counter()
        synth.make(raw, progress=True, **options)
        print(f"synthesised {clips} {settings.size_key} of {spec.name} in {time.perf_counter() - t:.0f} s", flush=True)
    atomic_write_json(marker, {**wanted, "synthesised": True})
    t = time.perf_counter()
    workers = max(1, min(4, os.cpu_count() or 1))
    builder.build(shards, BuildOptions(workers=workers, **build), progress=True, **synth.source(raw))
    print(f"shards ready in {shards} ({time.perf_counter() - t:.0f} s)", flush=True)
    return raw, shards


def _plain(value: Any) -> Any:
    """Options as JSON values, to compare with the marker (a dataclass option as its fields)."""
    return json.loads(json.dumps(value, default=lambda v: asdict(v) if is_dataclass(v) else str(v)))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _machine() -> dict[str, Any]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpus": cpus, "load_1min_at_end": None if load is None else round(load, 2)}


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
