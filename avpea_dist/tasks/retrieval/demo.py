"""`avpea demo --task retrieval`: text <-> clip retrieval on the embedded VALOR-layout set, on CPU.

1. synthesise the set (`shards synth valor`: clips in quads of two pictures x two sounds, so a caption
   naming both is matched only by a model that sees AND hears) and build caption shards from it (with the
   small text model the build trains on the captions);
2. train the tiny configuration with 2 DeepSpeed ranks three times: AV-PEA, audio only, visual only; each
   run validates (R-sum on val), keeps its best model and tests it once;
3. print test R@1/5/10 in both directions beside chance, and write ``OUT/summary.json``.

Finished runs and data are reused, so rerunning after an interruption continues where it stopped.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ...fileio import atomic_write_json
from ...apps.demo import default_config, print_timing, train_variant

DEFAULT_CLIPS = 240
VARIANTS = {"av_pea": "av", "audio_only": "audio", "visual_only": "visual"}
KEYS = ("t2v_r1", "t2v_r5", "t2v_r10", "v2t_r1", "v2t_r5", "v2t_r10")


def prepare_data(out: Path, clips: int, seed: int, img_size: int) -> Path:
    """Synthetic VALOR-layout folder -> caption shards (frames stored at the training size); reuses both."""
    from ...data.build import BuildOptions
    from ...datasets.ave.synth import SynthSpec
    from ...datasets.valor.build import build_valor
    from ...datasets.valor.synth import make_valor

    raw, shards = out / "data" / "raw", out / "data" / "shards"
    t = time.perf_counter()
    s = make_valor(raw, clips=clips, seed=seed, spec=SynthSpec(size=max(64, img_size)), progress=True)
    if not s["reused"]:
        print(f"synthesised {clips} clips ({s['clips_per_split']}) in {time.perf_counter() - t:.0f} s", flush=True)
    t = time.perf_counter()
    build_valor(raw, raw / "videos", shards, BuildOptions(workers=max(1, min(4, os.cpu_count() or 1)), shard_size=16,
                                                          frame_size=img_size, sampling="even"), progress=True)
    print(f"shards ready in {shards} ({time.perf_counter() - t:.0f} s)", flush=True)
    return shards


def check_out(out: Path) -> None:
    """Refuse a folder that holds another task's demo (another task's demo there would be mixed up with this one):
    its finished runs would be taken for ours and its data folder overwritten."""
    import json

    marker = out / "data" / "raw" / "synth.json"
    if marker.is_file() and json.loads(marker.read_text()).get("dataset") != "valor":
        raise ValueError(f"{out} holds another demo's data ({marker}); pass --out to a new folder, e.g. "
                         f"--out runs/demo_retrieval")
    for result in sorted(out.glob("runs/*/result.json")):
        task = json.loads(result.read_text()).get("task", "avel")
        if task != "retrieval":
            raise ValueError(f"{out} holds a run of task {task!r} ({result.parent}); pass --out to a new folder, e.g. "
                             f"--out runs/demo_retrieval")


def chance(clips: int) -> dict[str, float]:
    """Expected recalls of a random ranking with one caption per clip: R@k = k / clips."""
    return {k: min(1.0, int(k.split("_r")[1]) / clips) for k in KEYS}


def run_demo(out: str | Path = "runs/demo_retrieval", *, seed: int = 0, nproc: int = 2,
             overrides: list[str] | tuple[str, ...] = (), config: str | Path | None = None,
             clips: int = 0) -> dict[str, Any]:
    from ...config_load import load_config
    from ...data.stream import read_manifest

    out = Path(out)
    config = Path(config) if config else default_config("retrieval_tiny")
    cfg = load_config(config, list(overrides))  # fail on a bad override before minutes of work
    if cfg.task != "retrieval":
        raise ValueError(f"{config} trains task {cfg.task!r}; the retrieval demo needs a retrieval config")
    check_out(out)
    t0 = time.perf_counter()
    shards = prepare_data(out, clips or DEFAULT_CLIPS, seed, cfg.model.img_size)
    data_seconds = time.perf_counter() - t0
    test = read_manifest(shards)["splits"]["test"]
    t1 = time.perf_counter()
    results = {name: train_variant(config, out / "runs" / name, shards, seed, nproc,
                                   [f"model.modalities={modalities}", *overrides])
               for name, modalities in VARIANTS.items()}
    train_seconds = time.perf_counter() - t1
    metrics = {name: {k: round(float(r["test_metrics"][k]), 4) for k in KEYS} for name, r in results.items()}
    best_single = {k: max(metrics["audio_only"][k], metrics["visual_only"][k]) for k in ("t2v_r1", "v2t_r1")}
    summary = {
        "train_seconds": round(train_seconds, 1),
        "test": metrics,
        "chance": {k: round(v, 4) for k, v in chance(int(test["samples"])).items()},
        "ok": all(metrics["av_pea"][k] > best_single[k] for k in best_single),
        "fusion_margin_r1": {k: round(metrics["av_pea"][k] - v, 4) for k, v in best_single.items()},
        "data_seconds": round(data_seconds, 1),
        "reused_runs": [name for name, r in results.items() if r.get("reused")],
        "seed": seed, "clips": clips or DEFAULT_CLIPS, "ranks": nproc, "config": str(config),
        "overrides": list(overrides), "test_clips": int(test["samples"]), "test_captions": int(test["captions"]),
        "runs": {name: {k: r.get(k) for k in ("best_val_score", "best_step", "step", "train_seconds", "wall_seconds",
                                               "run_dir")} for name, r in results.items()},
    }
    atomic_write_json(out / "summary.json", summary)
    print_summary(summary)
    print(f"next: avpea search --run {out / 'runs' / 'av_pea'} --shards {shards} "
          f"--query \"a blue checkerboard on the left while a high chord plays\"", flush=True)
    return summary


def print_summary(s: dict[str, Any]) -> None:
    print(f"\nTest retrieval on {s['test_clips']} clips / {s['test_captions']} captions (seed {s['seed']}, "
          f"{s['ranks']} DeepSpeed ranks on CPU), recall in %")
    print(f"  {'':<32} {'t2v R@1':>8} {'R@5':>6} {'R@10':>6}   {'v2t R@1':>8} {'R@5':>6} {'R@10':>6}")
    rows = [("AV-PEA (audio + visual, fused)", s["test"]["av_pea"]), ("audio only", s["test"]["audio_only"]),
            ("visual only", s["test"]["visual_only"]), ("chance (random ranking)", s["chance"])]
    for name, m in rows:
        t2v = " ".join(f"{100 * m[k]:6.1f}" for k in KEYS[:3])
        v2t = " ".join(f"{100 * m[k]:6.1f}" for k in KEYS[3:])
        print(f"  {name:<32}   {t2v}     {v2t}")
    print_timing(s)
    m = s["fusion_margin_r1"]
    verdict = ("AV-PEA beats both single streams on R@1 in both directions" if s["ok"] else
               "AV-PEA DID NOT BEAT both single streams on R@1 in both directions: see the runs' metrics.jsonl")
    print(f"R@1 margin over the best single stream: t2v {100 * m['t2v_r1']:+.1f}, v2t {100 * m['v2t_r1']:+.1f} "
          f"points: {verdict}")
