"""The end of a sweep: one row per grid point, as CSV, Markdown and a plot of the task's selection metric
(``best_val_<metric>``: ``best_val_accuracy`` for AVEL) vs trainable params.

Scores, steps and wall time come from each trial's own progress file (``trials/<point>.json``);
Ray only says whether a trial that did not finish was stopped early by the scheduler or failed.
Parameter counts come from the model built on the meta device (no memory, no weights).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ..fileio import atomic_open, atomic_write_text
from .sweep_points import point_key, selection_metric, trial_config


def _param_counts(cfg: Any) -> dict[str, Any]:
    """The model's counts with the task's head, built on the meta device (the task from the shards' manifest)."""
    import torch

    from ..data.manifest import read_manifest
    from ..models.model import AVPEAModel, param_counts
    from ..tasks.registry import build_task

    try:
        manifest = read_manifest(cfg.data.shards)
    except (OSError, ValueError):  # the shards are not reachable from the driver: AVEL's head needs none
        manifest = None
    task = build_task(cfg, manifest)
    with torch.device("meta"):
        return param_counts(AVPEAModel(cfg.model, task.build_head))


def _ray_status(grid_result: Any, axes: list[str]) -> dict[str, str]:
    out = {}
    for result in grid_result:
        key = point_key({k: result.config[k] for k in axes})
        out[key] = "failed" if result.error else "stopped early"
    return out


def collect_rows(folder: Path, base: dict[str, Any], points: list[dict[str, Any]], grid_result: Any) -> list[dict]:
    axes = list(points[0]) if points else []
    ray_status = _ray_status(grid_result, axes)
    best = f"best_val_{selection_metric(base['task'])}"
    rows = []
    for point in points:
        key = point_key(point)
        cfg = trial_config(base, point, folder)
        counts = _param_counts(cfg)
        path = folder / "trials" / f"{key}.json"
        state = json.loads(path.read_text()) if path.is_file() else {}
        status = state.get("status")
        if status != "finished":
            status = ray_status.get(key, "not run")
        rows.append({
            **{k.rsplit(".", 1)[-1]: v for k, v in point.items()},
            "adapter_params": counts["adapter_params"],
            "trainable_params": counts["trainable_params"],
            "trainable_share": counts["trainable_share"],
            best: state.get(best, state.get("best_val_score")),
            "steps": state.get("step"),
            "wall_time_s": state.get("wall_time_s"),
            "status": status,
            # Every node a trial ran on, in order (a trial retried after a lost node ran on two).
            "hosts": " ".join(dict.fromkeys(n["host"] for n in state.get("nodes", []))) or None,
            "ray_nodes": " ".join(dict.fromkeys(n["ray_node_id"] for n in state.get("nodes", []))) or None,
        })
    return rows


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "trainable_share":
        return f"{100 * value:.3f}%"
    if key == "best_val_accuracy":
        return f"{100 * value:.2f}%"
    if key.startswith("best_val_"):
        return f"{value:.4f}"
    if key == "wall_time_s":
        return f"{value:.1f}"
    if key == "ray_nodes":  # ids of 56 hex digits: their first 8 tell the nodes of one sweep apart
        return " ".join(node[:8] for node in value.split())
    if key in ("adapter_params", "trainable_params"):
        return f"{value:,}"
    return str(value)


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "(no trials)\n"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
    lines += ["| " + " | ".join(_fmt(k, r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_outputs(folder: Path, rows: list[dict], axes: list[str]) -> dict[str, Path]:
    files = {"csv": folder / "results.csv", "md": folder / "results.md", "png": folder / "accuracy_vs_params.png"}
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(files["csv"], buf.getvalue())
    atomic_write_text(files["md"], markdown(rows))
    _plot(files["png"], rows, [a.rsplit(".", 1)[-1] for a in axes])
    return files


def _short(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def _plot(path: Path, rows: list[dict], axes: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    best = next((k for k in (rows[0] if rows else {}) if k.startswith("best_val_")), "best_val_accuracy")
    metric, scale = best.removeprefix("best_val_"), 100 if best == "best_val_accuracy" else 1
    done = sorted((r for r in rows if r[best] is not None), key=lambda r: r["trainable_params"])
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    x = [r["trainable_params"] for r in done]
    y = [scale * r[best] for r in done]
    ax.plot(x, y, "o-" if len(axes) == 1 else "o", color="tab:blue")
    for r, xi, yi in zip(done, x, y):
        label = ", ".join(f"{a}={r[a]}" for a in axes)
        ax.annotate(label + ("" if r["status"] == "finished" else f" ({r['status']})"), (xi, yi),
                    textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    # Ticks at the trials themselves: a sweep often spans less than a decade, where log ticks crowd.
    ax.set_xticks(sorted(set(x)), [_short(v) for v in sorted(set(x))])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.margins(x=0.2, y=0.1)
    ax.set_xlabel("trainable parameters (adapters + head)")
    ax.set_ylabel(f"best val {metric}{' (%)' if scale == 100 else ''}")
    ax.set_title(f"AV-PEA sweep: {metric} vs trainable parameters")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
