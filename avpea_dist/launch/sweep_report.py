"""The end of a sweep: one row per trial, as CSV, Markdown and a plot of the task's selection metric
(``best_val_<metric>``: ``best_val_accuracy`` for AVEL) and its final-split metrics vs trainable params.

Scores, steps and wall time come from each trial's own progress file (``trials/<point>.json``);
Ray only says whether a trial that did not finish was stopped early by the scheduler or failed.
Parameter counts come from the model built on the meta device (no memory, no weights).

A sweep with a seeds axis (``train.seed``) is reported per point: every metric as mean ± std over the seeds
that finished, with n, and the seeds that did not finish named (``results.md``, ``results_by_point.csv``
and the plot); ``results.csv`` keeps one row per trial.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ..fileio import atomic_open, atomic_write_json, atomic_write_text
from .sweep_points import point_key, selection_metric, trial_config
from .sweep_seeds import SEED_KEY, Spread, spread


def _param_counts(cfg: Any) -> dict[str, Any]:
    """The model's counts with the task's head, built on the meta device (the task from the shards' manifest)."""
    import torch

    from ..data.manifest import read_description
    from ..models.model import AVPEAModel, param_counts
    from ..tasks.registry import build_task

    try:
        manifest = read_description(cfg.data.shards)
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
    metric = selection_metric(base["task"])
    best = f"best_val_{metric}"
    states = {}
    for point in points:
        path = folder / "trials" / f"{point_key(point)}.json"
        states[point_key(point)] = json.loads(path.read_text()) if path.is_file() else {}
    # The final split's metrics of every finished trial, one column each (older trial files kept only the
    # selection metric's test value).
    finals = {key: state.get("final_metrics") or ({f"test_{metric}": state["test_score"]}
                                                  if state.get("test_score") is not None else {})
              for key, state in states.items()}
    final_keys = list(dict.fromkeys(k for f in finals.values() for k in f))
    rows = []
    for point in points:
        key = point_key(point)
        cfg = trial_config(base, point, folder)
        counts = _param_counts(cfg)
        state = states[key]
        status = state.get("status")
        if status != "finished":
            status = ray_status.get(key, "not run")
        rows.append({
            **{k.rsplit(".", 1)[-1]: v for k, v in point.items()},
            "adapter_params": counts["adapter_params"],
            "trainable_params": counts["trainable_params"],
            "trainable_share": counts["trainable_share"],
            best: state.get(best, state.get("best_val_score")),
            **{k: finals[key].get(k) for k in final_keys},
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
    if key in ("best_val_accuracy", "test_accuracy", "val_accuracy"):
        return f"{100 * value:.2f}%"
    if key.startswith(("best_val_", "test_", "val_")) and isinstance(value, float):
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


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def metric_keys(rows: list[dict]) -> list[str]:
    """The columns holding scores: the selection metric's best val, then the final split's metrics."""
    keys = list(rows[0]) if rows else []
    start = next((i for i, k in enumerate(keys) if k.startswith("best_val_")), len(keys))
    end = keys.index("steps") if "steps" in keys else len(keys)
    return keys[start:end]


def by_point(rows: list[dict], axes: list[str]) -> list[dict]:
    """One row per point of the non-seed axes: each metric's spread over the point's finished seeds, n, and the
    seeds that did not finish with their status (a failed seed is reported, the others still count)."""
    seed = SEED_KEY.rsplit(".", 1)[-1]
    others = [a for a in axes if a != seed]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(json.dumps(r[a]) for a in others), []).append(r)
    out = []
    for members in groups.values():
        done = [r for r in members if r["status"] == "finished"]
        first = members[0]
        missing = "; ".join(f"seed {r[seed]} {r['status']}" for r in members if r["status"] != "finished")
        out.append({
            **{a: first[a] for a in others},
            **{k: first[k] for k in ("adapter_params", "trainable_params", "trainable_share")},
            **{k: spread(r[k] for r in done) for k in metric_keys(rows)},
            "n": len(done), "seeds": len(members),
            "status": f"{len(done)}/{len(members)} finished" + (f"; {missing}" if missing else ""),
        })
    return out


def _flat_spreads(rows: list[dict]) -> list[dict]:
    """``by_point`` rows for CSV: a metric's spread as <metric>_mean and <metric>_std columns."""
    out = []
    for r in rows:
        flat: dict[str, Any] = {}
        for k, v in r.items():
            if isinstance(v, Spread):
                flat[f"{k}_mean"], flat[f"{k}_std"] = v.mean, v.std
            else:
                flat[k] = v
        out.append(flat)
    return out


def markdown_by_point(rows: list[dict]) -> str:
    """The per-point table: each metric as mean ± std over the finished seeds (n in its own column)."""
    if not rows:
        return "(no trials)\n"
    keys = list(rows[0])

    def cell(k: str, v: Any) -> str:
        if isinstance(v, Spread):
            return v.text(percent="accuracy" in k, with_n=False)
        return _fmt(k, v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
    lines += ["| " + " | ".join(cell(k, r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def software_records(folder: Path) -> list[dict[str, Any]]:
    """The software the trials ran on (each run's result.json ``software``): each distinct record once, with
    the trials that ran on it (several when a cluster's nodes differ); [] when no trial recorded any."""
    by_record: dict[str, list[str]] = {}
    for path in sorted((folder / "trials").glob("*.json")):
        software = json.loads(path.read_text()).get("software")
        if isinstance(software, dict):
            by_record.setdefault(json.dumps(software, sort_keys=True), []).append(path.stem)
    return [{"software": json.loads(text), "trials": trials} for text, trials in by_record.items()]


def write_outputs(folder: Path, rows: list[dict], axes: list[str]) -> dict[str, Path]:
    """results.csv (one row per trial), results.md and the plot; with a seeds axis the Markdown and the plot
    are per point (mean ± std, n) and results_by_point.csv holds the same numbers; software.json: what the
    trials ran on."""
    files = {"csv": folder / "results.csv", "md": folder / "results.md", "png": folder / "accuracy_vs_params.png"}
    leaves = [a.rsplit(".", 1)[-1] for a in axes]
    atomic_write_text(files["csv"], _csv(rows))
    if SEED_KEY in axes:
        points = by_point(rows, leaves)
        files["points"] = folder / "results_by_point.csv"
        atomic_write_text(files["points"], _csv(_flat_spreads(points)))
        atomic_write_text(files["md"], "## Per point, over seeds (mean ± sample std of the finished seeds)\n\n"
                          + markdown_by_point(points) + "\n## Per trial\n\n" + markdown(rows))
        _plot(files["png"], rows, leaves, points)
    else:
        atomic_write_text(files["md"], markdown(rows))
        _plot(files["png"], rows, leaves)
    software = software_records(folder)
    if software:
        files["software"] = folder / "software.json"
        atomic_write_json(files["software"], software)
    return files


def _short(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def _plot(path: Path, rows: list[dict], axes: list[str], points: list[dict] | None = None) -> None:
    """The selection metric vs trainable parameters: one marker per trial, or with ``points`` (a seeds axis)
    the mean of each point's finished seeds with a ± std bar, its seeds as small dots behind it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    best = next((k for k in (rows[0] if rows else {}) if k.startswith("best_val_")), "best_val_accuracy")
    metric, scale = best.removeprefix("best_val_"), 100 if best == "best_val_accuracy" else 1
    done = sorted((r for r in rows if r[best] is not None), key=lambda r: r["trainable_params"])
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    x = [r["trainable_params"] for r in done]
    if points is None:
        y = [scale * r[best] for r in done]
        ax.plot(x, y, "o-" if len(axes) == 1 else "o", color="tab:blue")
        labelled = [(r, r["status"] != "finished" and r["status"]) for r in done]
    else:
        ax.plot(x, [scale * r[best] for r in done], ".", color="tab:blue", alpha=0.35, label="one seed")
        shown = sorted((p for p in points if p[best].mean is not None), key=lambda p: p["trainable_params"])
        ax.errorbar([p["trainable_params"] for p in shown], [scale * p[best].mean for p in shown],
                    yerr=[scale * (p[best].std or 0.0) for p in shown], fmt="o-" if len(axes) == 2 else "o",
                    color="tab:blue", capsize=3, label="mean ± std over finished seeds")
        ax.legend(fontsize=7)
        done, y = shown, [scale * p[best].mean for p in shown]
        x = [p["trainable_params"] for p in shown]
        labelled = [(p, f"n={p['n']}") for p in shown]
    for (r, note), xi, yi in zip(labelled, x, y):
        label = ", ".join(f"{a}={r[a]}" for a in axes if a in r)
        ax.annotate(label + (f" ({note})" if note else ""), (xi, yi), textcoords="offset points", xytext=(4, 4),
                    fontsize=7)
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
