"""`avpea demo`: the whole system on a laptop-sized problem, in minutes, on CPU.

1. synthesise the embedded audio-visual event dataset (an event needs its picture AND its sound;
   distractor segments carry only one of them, or a mismatched pair) and build shards from it;
2. train the tiny configuration with 2 DeepSpeed ranks (torchrun) three times: AV-PEA, audio only,
   visual only; each run validates, keeps its best model and tests it once;
3. print test per-segment accuracy against the majority class and write ``OUT/summary.json``.

A run folder that already finished is reused (``status: finished`` in its result.json), and the data
steps skip work that is done, so rerunning the demo after an interruption continues where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .. import runtime
from ..fileio import atomic_write_json
from .evaluate import majority_accuracy

DEFAULT_CLIPS = 200
VARIANTS = {"av_pea": "av", "audio_only": "audio", "visual_only": "visual"}


class DemoInterrupted(Exception):
    """Ctrl-C (or SIGTERM) during a run: the run saved a checkpoint; rerunning the demo continues."""


def default_config() -> Path:
    from ..presets import find_config

    path = find_config("avel_tiny")
    if not path.is_file():
        raise FileNotFoundError("the shipped config avel_tiny.yaml is missing from this install; pass --config PATH")
    return path


def prepare_data(out: Path, clips: int, seed: int, img_size: int, num_classes: int) -> Path:
    """Synthetic mp4s -> shards, through the data package; reuses a finished build."""
    from ..data.build import BuildOptions, build_ave
    from ..data.synth import make_dataset

    raw, shards = out / "data" / "raw", out / "data" / "shards"
    marker = raw / "synth.json"
    wanted = {"clips": clips, "seed": seed, "num_classes": num_classes}
    if not (marker.is_file() and json.loads(marker.read_text()) == wanted):
        shutil.rmtree(raw, ignore_errors=True)
        shutil.rmtree(shards, ignore_errors=True)
        t = time.perf_counter()
        counts = make_dataset(raw, clips, seed=seed, num_classes=num_classes, progress=True)
        atomic_write_json(marker, wanted)
        print(f"synthesised {clips} clips ({counts}) in {time.perf_counter() - t:.0f} s", flush=True)
    t = time.perf_counter()
    # Frames are stored at the training size: no point decoding 224-px JPEGs to train at 64 px.
    build_ave(raw, shards, BuildOptions(workers=max(1, min(4, os.cpu_count() or 1)), shard_size=16,
                                        frame_size=img_size), progress=True)
    print(f"shards ready in {shards} ({time.perf_counter() - t:.0f} s)", flush=True)
    return shards


def train_variant(config: Path, run_dir: Path, shards: Path, modalities: str, seed: int, nproc: int,
                  overrides: list[str]) -> dict[str, Any]:
    result_path = run_dir / "result.json"
    if result_path.is_file():
        done = json.loads(result_path.read_text())
        if done.get("status") == "finished":
            print(f"{run_dir.name}: reusing the finished run in {run_dir}", flush=True)
            return {**done, "reused": True}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port",
           str(runtime.free_port()), "-m", "avpea_dist.train.entry", str(config), f"data.shards={shards}",
           f"train.out={run_dir}", f"model.modalities={modalities}", f"train.seed={seed}", *overrides]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cpus // nproc)), "DS_ACCELERATOR": runtime.choose_accelerator()}
    print(f"\n== {run_dir.name}: {' '.join(cmd[2:])}", flush=True)
    t = time.perf_counter()
    log = run_dir.parent / f"{run_dir.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        # Everything goes to the log; the terminal gets the run's own messages (evaluations, errors).
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
    print(f"{run_dir.name}: test accuracy {result['test_accuracy']:.4f} (best val {result['best_val_accuracy']:.4f} "
          f"at step {result['best_step']}), {seconds:.0f} s", flush=True)
    return result


def _relay(proc: subprocess.Popen, log: Any, name: str) -> None:
    """Everything to the log; the terminal gets the run's own messages (evaluations, stops, errors)."""
    for line in proc.stdout:
        log.write(line)
        text = line.decode(errors="replace").split("\r")[-1].strip()  # after a progress bar redraw
        if text.startswith(("step ", "avpea train", "stopping at step")):
            print(f"  {name}: {text}", flush=True)


def run_demo(out: str | Path = "runs/demo", *, config: str | Path | None = None, seed: int = 0, clips: int = 0,
             nproc: int = 2, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    from ..config_load import load_config
    from ..data.stream import read_manifest

    out = Path(out)
    config = Path(config) if config else default_config()
    cfg = load_config(config, list(overrides))  # fail on a bad override before minutes of work
    t0 = time.perf_counter()
    shards = prepare_data(out, clips or DEFAULT_CLIPS, seed, cfg.model.img_size, cfg.model.num_classes - 1)
    data_seconds = time.perf_counter() - t0
    manifest = read_manifest(shards)
    t1 = time.perf_counter()
    results = {name: train_variant(config, out / "runs" / name, shards, modalities, seed, nproc, list(overrides))
               for name, modalities in VARIANTS.items()}
    train_seconds = time.perf_counter() - t1
    hist = {s: manifest["splits"][s]["segment_histogram"] for s in ("train", "test")}
    acc = {name: r["test_accuracy"] for name, r in results.items()}
    acc["majority"] = majority_accuracy(hist["train"], hist["test"])
    margin = acc["av_pea"] - max(acc["majority"], acc["audio_only"], acc["visual_only"])
    reused = [name for name, r in results.items() if r.get("reused")]
    summary = {
        "reused_runs": reused,
        "test_accuracy": {k: round(acc[k], 4) for k in ("av_pea", "audio_only", "visual_only", "majority")},
        "train_seconds": round(train_seconds, 1),
        "data_seconds": round(data_seconds, 1),
        "fusion_margin": round(margin, 4),
        "ok": margin > 0.05,
        "seed": seed, "clips": clips or DEFAULT_CLIPS, "ranks": nproc, "config": str(config),
        "overrides": list(overrides), "test_segments": sum(hist["test"]),
        "runs": {name: {k: r.get(k) for k in ("best_val_accuracy", "best_step", "step", "train_seconds",
                                               "wall_seconds", "run_dir")} for name, r in results.items()},
    }
    atomic_write_json(out / "summary.json", summary)
    _print_table(summary)
    print(f"next: avpea train avel_tiny data.shards={shards} train.out=runs/avel_tiny\n"
          f"      avpea predict --run {out / 'runs' / 'av_pea'} {out / 'data' / 'raw' / 'AVE'}/*.mp4", flush=True)
    return summary


def _print_table(s: dict[str, Any]) -> None:
    acc = s["test_accuracy"]
    rows = [("AV-PEA (audio + visual, fused)", acc["av_pea"]), ("audio only", acc["audio_only"]),
            ("visual only", acc["visual_only"]), ("majority class", acc["majority"])]
    print(f"\nTest per-segment accuracy ({s['test_segments']} segments, seed {s['seed']}, {s['ranks']} DeepSpeed "
          f"ranks on CPU)")
    for name, value in rows:
        print(f"  {name:<32} {100 * value:6.2f} %")
    reused = s.get("reused_runs", [])
    if len(reused) == len(s["runs"]):
        print(f"training + evaluation: reused the {len(reused)} finished runs (nothing trained; delete the run "
              f"folders or pass another --out to train again)")
    else:
        note = f"; reused {', '.join(reused)}" if reused else ""
        print(f"training + evaluation: {s['train_seconds']:.0f} s{note} (data synthesis and shards: "
              f"{s['data_seconds']:.0f} s)")
    verdict = "fusion wins" if s["ok"] else "FUSION DID NOT WIN by 5 points: see the runs' metrics.jsonl"
    print(f"AV-PEA beats the best single stream / baseline by {100 * s['fusion_margin']:.1f} points: {verdict}")
