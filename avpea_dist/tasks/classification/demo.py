"""`avpea demo --task classification`: multi-label clip classification on the embedded AudioSet-layout set, on CPU.

The embedded set (``shards synth audioset``) is multi-label, and its classes need both streams: a class is a
(picture kind, sound kind) pair of a 3 x 3 grid and a clip carries every pair of what it shows and plays, so
the picture tells the row and the sound the column, neither stream alone the label. AV-PEA, audio only and visual only train
on it; the table puts their test mAP, mean AUC and top-1 beside the class prior of the training split (a
constant scorer). The bar: AV-PEA beats both single-stream ablations on test mAP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..demo_settings import DemoOutcome, DemoSettings, rounded, timing_line
from .task import ClassificationTask

VARIANTS = ("av_pea", "audio_only", "visual_only")
KEYS = ("map", "mauc", "d_prime", "top1")


def synth_options(cfg: Any, clips: int, seed: int) -> dict[str, Any]:
    # Pictures at least 64 px, at the training size above that (stored at the training size by the build).
    return {"clips": clips, "seed": seed, "size": max(64, cfg.model.img_size)}


def measure(o: DemoOutcome) -> dict[str, Any]:
    test = {name: {k: o.results[name]["test_metrics"].get(k) for k in KEYS} for name in VARIANTS}
    test["class_prior"] = {k: ClassificationTask(o.cfg, o.manifest).baselines("test").get(k) for k in KEYS}
    single = max(test["audio_only"]["map"], test["visual_only"]["map"])
    o.keep["margin"] = test["av_pea"]["map"] - single
    return {"test": {name: {k: rounded(v) for k, v in m.items()} for name, m in test.items()},
            "fusion_margin_map": round(o.keep["margin"], 4),
            "test_clips": int(o.manifest["splits"]["test"]["samples"]), "classes": len(o.manifest["classes"])}


def bar(s: dict[str, Any], o: DemoOutcome) -> dict[str, bool]:
    return {"av_pea_beats_both_single_stream_ablations_on_test_map": o.keep["margin"] > 0}


def report(s: dict[str, Any], o: DemoOutcome) -> list[str]:
    lines = ["", f"Test classification on {s['test_clips']} clips, {s['classes']} classes, multi-label (seed "
                 f"{s['seed']}, {s['ranks']} DeepSpeed ranks on CPU)",
             f"  {'':<32} {'mAP':>7} {'mAUC':>7} {'d-prime':>8} {'top-1':>7}"]
    rows = [("AV-PEA (audio + visual, fused)", "av_pea"), ("audio only", "audio_only"),
            ("visual only", "visual_only"), ("class prior (constant scorer)", "class_prior")]
    for label, name in rows:
        m = s["test"][name]
        cells = [_cell(m["map"], 100), _cell(m["mauc"], 100), _cell(m["d_prime"], 1), _cell(m["top1"], 100)]
        lines.append(f"  {label:<32} {cells[0]:>7} {cells[1]:>7} {cells[2]:>8} {cells[3]:>7}")
    lines.append("  (mAP, mAUC and top-1 in %; mAP over the classes with a positive test clip)")
    verdict = ("AV-PEA beats both single streams on test mAP" if s["ok"] else
               "AV-PEA DID NOT BEAT both single streams on test mAP: see the runs' metrics.jsonl")
    return [*lines, timing_line(s),
            f"mAP margin over the best single stream: {100 * s['fusion_margin_map']:+.1f} points: {verdict}"]


def _cell(value: float | None, scale: float) -> str:
    return "n/a" if value is None else f"{scale * value:.2f}"


def next_steps(out: Path, shards: Path) -> str:
    return (f"next: avpea train classification_tiny data.shards={shards} train.out=runs/classification_tiny\n"
            f"      avpea eval {out / 'runs' / 'av_pea' / 'config.yaml'} --checkpoint "
            f"{out / 'runs' / 'av_pea' / 'best' / 'adapters.safetensors'} --split test")


DEMO = DemoSettings(config="classification_tiny", dataset="audioset", clips=400, synth=synth_options,
                    build={"shard_size": 16}, measure=measure, bar=bar, report=report, next_steps=next_steps)
