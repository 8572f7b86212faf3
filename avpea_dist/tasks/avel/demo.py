"""`avpea demo` (--task avel, the default): AVEL on the embedded audio-visual event dataset, on CPU.

The embedded set (``shards synth ave``): an event needs its picture AND its sound; distractor segments carry
only one of them, or a mismatched pair. AV-PEA, audio only and visual only train on it; the table puts their
test per-segment accuracy beside the majority class. The bar: AV-PEA beats the best single stream and the
majority class by more than 5 points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..demo_settings import DemoOutcome, DemoSettings, table_lines, timing_line
from .metrics import majority_accuracy

MARGIN_BAR = 0.05
"""Points (as a fraction) by which AV-PEA must beat the best of audio only, visual only and the majority."""


def synth_options(cfg: Any, clips: int, seed: int) -> dict[str, Any]:
    # The set's classes are the config's event classes less the background.
    return {"clips": clips, "seed": seed, "classes": cfg.avel.num_classes - 1}


def measure(o: DemoOutcome) -> dict[str, Any]:
    hist = {s: o.manifest["splits"][s]["segment_histogram"] for s in ("train", "test")}
    acc = {name: r["test_accuracy"] for name, r in o.results.items()}
    acc["majority"] = majority_accuracy(hist["train"], hist["test"])
    margin = acc["av_pea"] - max(acc["majority"], acc["audio_only"], acc["visual_only"])
    o.keep["margin"] = margin
    return {"test_accuracy": {k: round(acc[k], 4) for k in ("av_pea", "audio_only", "visual_only", "majority")},
            "fusion_margin": round(margin, 4), "test_segments": sum(hist["test"])}


def bar(s: dict[str, Any], o: DemoOutcome) -> dict[str, bool]:
    return {"av_pea_beats_every_single_stream_and_the_majority_by_5_points": o.keep["margin"] > MARGIN_BAR}


def report(s: dict[str, Any], o: DemoOutcome) -> list[str]:
    acc = s["test_accuracy"]
    lines = table_lines(f"Test per-segment accuracy ({s['test_segments']} segments, seed {s['seed']}, {s['ranks']} "
                        f"DeepSpeed ranks on CPU)",
                        [("AV-PEA (audio + visual, fused)", acc["av_pea"]), ("audio only", acc["audio_only"]),
                         ("visual only", acc["visual_only"]), ("majority class", acc["majority"])])
    verdict = "fusion wins" if s["ok"] else "FUSION DID NOT WIN by 5 points: see the runs' metrics.jsonl"
    return [*lines, timing_line(s),
            f"AV-PEA beats the best single stream / baseline by {100 * s['fusion_margin']:.1f} points: {verdict}"]


def next_steps(out: Path, shards: Path) -> str:
    return (f"next: avpea train avel_tiny data.shards={shards} train.out=runs/avel_tiny\n"
            f"      avpea predict --run {out / 'runs' / 'av_pea'} {out / 'data' / 'raw' / 'AVE'}/*.mp4")


DEMO = DemoSettings(config="avel_tiny", dataset="ave", clips=200, synth=synth_options, build={"shard_size": 16},
                    measure=measure, bar=bar, report=report, next_steps=next_steps, out="runs/demo",
                    run_keys=("best_val_accuracy", "best_step", "step", "train_seconds", "wall_seconds", "run_dir"))
