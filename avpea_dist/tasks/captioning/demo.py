"""`avpea demo --task captioning`: audio-visual captioning end to end on CPU, in minutes.

1. synthesise the embedded VALOR-layout set (`avpea shards synth valor`: each clip shows a coloured shape on
   one side and plays a pitched sound; its caption names both, from a small grammar; clips come in quads
   sharing pictures and sounds, so a caption needs both streams) and build its shards with the text folder
   (`avpea shards build valor`);
2. train ``captioning_tiny`` three times with 2 DeepSpeed ranks (torchrun): AV-PEA, audio only, visual only;
   each run validates (CIDEr-D on val), keeps its best model and captions the test split once;
3. print BLEU-4, METEOR, ROUGE-L and CIDEr-D (x 100, as papers print them) beside the most-frequent-caption
   baseline, a few test captions with their references, and how many of AV-PEA's test captions (among those
   kept in result.json) name what is seen and what is heard (the synthetic set's ground truth);
   write ``OUT/summary.json`` (metric values as pycocoevalcap returns them: fractions).

Finished runs and a finished data build are reused, so a rerun after an interruption continues.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ...fileio import atomic_write_json
from .metrics import METRICS

DEFAULT_CLIPS = 240
VARIANTS = {"av_pea": "av", "audio_only": "audio", "visual_only": "visual"}
LABELS = {"av_pea": "AV-PEA (audio + visual)", "audio_only": "audio only", "visual_only": "visual only",
          "most_frequent": "most frequent caption"}


def prepare_data(out: Path, clips: int, seed: int, img_size: int) -> Path:
    """Synthetic VALOR-layout set -> caption shards with their text folder; reuses finished work."""
    from ...data.build import BuildOptions
    from ...data.synth import SynthSpec
    from ..valor.build import build_valor
    from ..valor.synth import make_valor

    raw, shards = out / "data" / "raw", out / "data" / "shards"
    t = time.perf_counter()
    made = make_valor(raw, clips=clips, seed=seed, spec=SynthSpec(size=96), progress=True)
    if not made.get("reused"):
        print(f"synthesised {clips} clips ({made['clips_per_split']}) in {time.perf_counter() - t:.0f} s", flush=True)
    t = time.perf_counter()
    # Frames are stored at the training size: no point decoding 96-px JPEGs to train at 64 px.
    opts = BuildOptions(workers=max(1, min(4, os.cpu_count() or 1)), shard_size=16, frame_size=img_size,
                        sampling="even")
    build_valor(raw, raw / "videos", shards, opts, progress=True)
    print(f"shards ready in {shards} ({time.perf_counter() - t:.0f} s)", flush=True)
    return shards


def run_demo(out: str | Path = "runs/demo_captioning", *, seed: int = 0, nproc: int = 2,
             overrides: list[str] | tuple[str, ...] = (), config: str | Path | None = None,
             clips: int = 0) -> dict[str, Any]:
    from ...config_load import load_config
    from ...data.manifest import read_manifest
    from ...train.demo import default_config, train_variant
    from .task import CaptioningTask

    out = Path(out)
    config = Path(config) if config else default_config("captioning_tiny")
    cfg = load_config(config, list(overrides))  # fail on a bad override before minutes of work
    if cfg.task != "captioning":
        raise ValueError(f"{config} trains task={cfg.task}; the captioning demo needs a captioning config")
    clips = clips or DEFAULT_CLIPS
    t0 = time.perf_counter()
    shards = prepare_data(out, clips, seed, cfg.model.img_size)
    data_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    results = {name: train_variant(config, out / "runs" / name, shards, seed, nproc,
                                   [f"model.modalities={modalities}", *overrides])
               for name, modalities in VARIANTS.items()}
    train_seconds = time.perf_counter() - t1
    cfg = load_config(config, [*overrides, f"data.shards={shards}"])
    baseline = CaptioningTask(cfg, read_manifest(shards)).baselines("test")
    test = {name: _four(r["test_metrics"]) for name, r in results.items()}
    test["most_frequent"] = _four(baseline)
    truth = _ground_truth(out / "data" / "raw" / "clips.json")
    samples = _samples(results, truth)
    named = _named_share(samples)
    margin = test["av_pea"]["cider"] - max(test[k]["cider"] for k in ("audio_only", "visual_only", "most_frequent"))
    reused = [name for name, r in results.items() if r.get("reused")]
    summary = {
        "train_seconds": round(train_seconds, 1),
        "data_seconds": round(data_seconds, 1),
        "test": test,
        "samples": samples,
        "names_seen_and_heard": named,
        "cider_margin": round(margin, 4),
        "ok": margin > 0 and named["both"] == named["captions"] > 0,
        "reused_runs": reused,
        "test_clips": results["av_pea"]["test_metrics"].get("samples"),
        "metric_notes": results["av_pea"]["test_metrics"].get("notes"),
        "seed": seed, "clips": clips, "ranks": nproc, "config": str(config), "overrides": list(overrides),
        "runs": {name: {k: r.get(k) for k in ("best_val_score", "best_step", "steps", "train_seconds",
                                               "wall_seconds", "run_dir")} for name, r in results.items()},
    }
    atomic_write_json(out / "summary.json", summary)
    print_summary(summary)
    videos = sorted((out / "data" / "raw" / "videos").glob("*.mp4"))[:2]
    print(f"next: avpea caption --run {out / 'runs' / 'av_pea'} {' '.join(map(str, videos))}", flush=True)
    return summary


def _four(metrics: dict[str, Any]) -> dict[str, float | None]:
    return {k: (None if metrics.get(k) is None else round(float(metrics[k]), 4)) for k in METRICS}


def _ground_truth(path: Path) -> dict[str, dict[str, str]]:
    """video id -> its picture and sound words (the synthetic set's clips.json)."""
    if not path.is_file():
        return {}
    return {c["video_id"]: {k: c[k] for k in ("colour", "shape", "side", "pitch", "sound")}
            for c in json.loads(path.read_text())}


def _samples(results: dict[str, dict[str, Any]], truth: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """AV-PEA's kept test captions, each with the ablations' caption of the same clip and the references."""
    others = {name: {e["id"]: e["caption"] for e in r["test_metrics"].get("examples", [])}
              for name, r in results.items()}
    rows = []
    for e in results["av_pea"]["test_metrics"].get("examples", []):
        row = {"id": e["id"], "av_pea": e["caption"], "audio_only": others["audio_only"].get(e["id"]),
               "visual_only": others["visual_only"].get(e["id"]), "references": e["references"]}
        if e["id"] in truth:
            row["truth"] = truth[e["id"]]
        rows.append(row)
    return rows


def _named_share(samples: list[dict[str, Any]]) -> dict[str, int]:
    """How many AV-PEA sample captions name the clip's picture (colour, shape, side) and its sound
    (pitch, kind), by the ground truth."""
    seen = heard = both = 0
    rows = [s for s in samples if "truth" in s]
    for s in rows:
        words = set(s["av_pea"].split())
        t = s["truth"]
        v = {t["colour"], t["shape"], t["side"]} <= words
        a = {t["pitch"], t["sound"]} <= words
        seen, heard, both = seen + v, heard + a, both + (v and a)
    return {"captions": len(rows), "seen": seen, "heard": heard, "both": both}


def print_summary(s: dict[str, Any]) -> None:
    def cell(v: float | None) -> str:
        return "   n/a" if v is None else f"{100 * v:6.1f}"

    print(f"\nTest captions ({s['test_clips']} clips, seed {s['seed']}, {s['ranks']} DeepSpeed ranks on CPU); "
          f"pycocoevalcap x 100")
    print(f"  {'':<26} {'BLEU-4':>6} {'METEOR':>6} {'ROUGE-L':>7} {'CIDEr-D':>7}")
    for name, label in LABELS.items():
        m = s["test"][name]
        print(f"  {label:<26} {cell(m['bleu4'])} {cell(m['meteor'])} {cell(m['rouge_l']):>7} {cell(m['cider']):>7}")
    notes = s.get("metric_notes") or {}
    if s["test"]["av_pea"]["meteor"] is None:
        print(f"  METEOR: {notes.get('meteor', 'unavailable')}")
    print("\nSample test captions (AV-PEA | audio only | visual only; then the references)")
    for row in s["samples"][:4]:
        print(f"  {row['id']}\n    AV-PEA:      {row['av_pea']}\n    audio only:  {row['audio_only']}\n"
              f"    visual only: {row['visual_only']}")
        for ref in row["references"]:
            print(f"    reference:   {ref}")
    n = s["names_seen_and_heard"]
    print(f"\nAV-PEA names what is seen in {n['seen']}/{n['captions']} sample captions, what is heard in "
          f"{n['heard']}/{n['captions']}, both in {n['both']}/{n['captions']}")
    reused = s.get("reused_runs", [])
    if len(reused) == len(VARIANTS):
        print("training + evaluation: reused the 3 finished runs (nothing trained; pass another --out to train again)")
    else:
        note = f"; reused {', '.join(reused)}" if reused else ""
        print(f"training + evaluation: {s['train_seconds']:.0f} s{note} (data synthesis and shards: "
              f"{s['data_seconds']:.0f} s)")
    verdict = ("AV-PEA beats audio only, visual only and the most frequent caption on CIDEr-D" if s["cider_margin"] > 0
               else "AV-PEA DID NOT BEAT every baseline on CIDEr-D: see the runs' metrics.jsonl")
    print(f"{verdict} (margin {100 * s['cider_margin']:.1f})")
