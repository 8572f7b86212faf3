"""`avpea demo` (--task avel, the default): AVEL on the embedded audio-visual event dataset, on CPU.

1. synthesise the embedded dataset (an event needs its picture AND its sound; distractor segments carry
   only one of them, or a mismatched pair) and build shards from it;
2. train the tiny configuration with 2 DeepSpeed ranks (torchrun) three times: AV-PEA, audio only,
   visual only; each run validates, keeps its best model and tests it once;
3. print test per-segment accuracy against the majority class and write ``OUT/summary.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ...fileio import atomic_write_json
from ...apps.demo import default_config, print_table, print_timing, train_variant
from .metrics import majority_accuracy

DEFAULT_CLIPS = 200
VARIANTS = {"av_pea": "av", "audio_only": "audio", "visual_only": "visual"}


def prepare_data(out: Path, clips: int, seed: int, img_size: int, num_classes: int) -> Path:
    """Synthetic mp4s -> shards, through the data package; reuses a finished build."""
    from ...data.build import BuildOptions
    from ...datasets.ave.build import build_ave
    from ...datasets.ave.synth import make_dataset

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


def run_demo(out: str | Path = "runs/demo", *, seed: int = 0, nproc: int = 2,
             overrides: list[str] | tuple[str, ...] = (), config: str | Path | None = None,
             clips: int = 0) -> dict[str, Any]:
    from ...config_load import load_config
    from ...data.stream import read_manifest

    out = Path(out)
    config = Path(config) if config else default_config("avel_tiny")
    cfg = load_config(config, list(overrides))  # fail on a bad override before minutes of work
    t0 = time.perf_counter()
    shards = prepare_data(out, clips or DEFAULT_CLIPS, seed, cfg.model.img_size, cfg.avel.num_classes - 1)
    data_seconds = time.perf_counter() - t0
    manifest = read_manifest(shards)
    t1 = time.perf_counter()
    results = {name: train_variant(config, out / "runs" / name, shards, seed, nproc,
                                   [f"model.modalities={modalities}", *overrides])
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
    print_table(f"Test per-segment accuracy ({s['test_segments']} segments, seed {s['seed']}, {s['ranks']} DeepSpeed "
                f"ranks on CPU)",
                [("AV-PEA (audio + visual, fused)", acc["av_pea"]), ("audio only", acc["audio_only"]),
                 ("visual only", acc["visual_only"]), ("majority class", acc["majority"])])
    print_timing(s)
    verdict = "fusion wins" if s["ok"] else "FUSION DID NOT WIN by 5 points: see the runs' metrics.jsonl"
    print(f"AV-PEA beats the best single stream / baseline by {100 * s['fusion_margin']:.1f} points: {verdict}")
