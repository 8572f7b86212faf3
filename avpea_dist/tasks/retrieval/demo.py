"""`avpea demo --task retrieval`: text <-> clip retrieval on the embedded VALOR-layout set, on CPU.

The embedded set (``shards synth valor``: clips in quads of two pictures x two sounds, so a caption naming both
is matched only by a model that sees AND hears) is built into caption shards (with the small text model the
build trains on the captions). Each run validates on R-sum; the table is test R@1/5/10 in both directions
beside chance. The bar: AV-PEA beats both single streams on R@1 in both directions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..demo_settings import DemoOutcome, DemoSettings, timing_line

DEFAULT_CLIPS = 240
KEYS = ("t2v_r1", "t2v_r5", "t2v_r10", "v2t_r1", "v2t_r5", "v2t_r10")
R1 = ("t2v_r1", "v2t_r1")


def synth_options(cfg: Any, clips: int, seed: int) -> dict[str, Any]:
    # Pictures at least 64 px, at the training size above that (stored at the training size by the build);
    # ffmpeg's standard AAC coder, as the demo's measured numbers were made with (not `shards synth`'s fast one).
    return {"clips": clips, "seed": seed, "size": max(64, cfg.model.img_size), "aac_fast": False}


def chance(clips: int) -> dict[str, float]:
    """Expected recalls of a random ranking with one caption per clip: R@k = k / clips."""
    return {k: min(1.0, int(k.split("_r")[1]) / clips) for k in KEYS}


def measure(o: DemoOutcome) -> dict[str, Any]:
    test = o.manifest["splits"]["test"]
    metrics = {name: {k: round(float(r["test_metrics"][k]), 4) for k in KEYS} for name, r in o.results.items()}
    best_single = {k: max(metrics["audio_only"][k], metrics["visual_only"][k]) for k in R1}
    return {"test": metrics, "chance": {k: round(v, 4) for k, v in chance(int(test["samples"])).items()},
            "fusion_margin_r1": {k: round(metrics["av_pea"][k] - v, 4) for k, v in best_single.items()},
            "test_clips": int(test["samples"]), "test_captions": int(test["captions"])}


def bar(s: dict[str, Any], o: DemoOutcome) -> dict[str, bool]:
    m = s["test"]
    return {f"av_pea_beats_both_single_streams_on_{k}": m["av_pea"][k] > max(m["audio_only"][k], m["visual_only"][k])
            for k in R1}


def report(s: dict[str, Any], o: DemoOutcome) -> list[str]:
    lines = ["", f"Test retrieval on {s['test_clips']} clips / {s['test_captions']} captions (seed {s['seed']}, "
                 f"{s['ranks']} DeepSpeed ranks on CPU), recall in %",
             f"  {'':<32} {'t2v R@1':>8} {'R@5':>6} {'R@10':>6}   {'v2t R@1':>8} {'R@5':>6} {'R@10':>6}"]
    rows = [("AV-PEA (audio + visual, fused)", s["test"]["av_pea"]), ("audio only", s["test"]["audio_only"]),
            ("visual only", s["test"]["visual_only"]), ("chance (random ranking)", s["chance"])]
    for name, m in rows:
        t2v = " ".join(f"{100 * m[k]:6.1f}" for k in KEYS[:3])
        v2t = " ".join(f"{100 * m[k]:6.1f}" for k in KEYS[3:])
        lines.append(f"  {name:<32}   {t2v}     {v2t}")
    m = s["fusion_margin_r1"]
    verdict = ("AV-PEA beats both single streams on R@1 in both directions" if s["ok"] else
               "AV-PEA DID NOT BEAT both single streams on R@1 in both directions: see the runs' metrics.jsonl")
    return [*lines, timing_line(s), f"R@1 margin over the best single stream: t2v {100 * m['t2v_r1']:+.1f}, v2t "
                                    f"{100 * m['v2t_r1']:+.1f} points: {verdict}"]


def next_steps(out: Path, shards: Path) -> str:
    return (f"next: avpea search --run {out / 'runs' / 'av_pea'} --shards {shards} "
            f"--query \"a blue checkerboard on the left while a high chord plays\"")


DEMO = DemoSettings(config="retrieval_tiny", dataset="valor", clips=DEFAULT_CLIPS, synth=synth_options,
                    build={"shard_size": 16, "sampling": "even"}, measure=measure, bar=bar, report=report,
                    next_steps=next_steps)
