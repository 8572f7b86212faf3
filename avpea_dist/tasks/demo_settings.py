"""What a task's CPU demo is: its settings. The ablation harness (``apps/demo.py``) does the rest for every task.

A task's ``demo.py`` defines ``DEMO = DemoSettings(...)`` and its ``TaskSpec`` names it
(``demo="avpea_dist.tasks.<name>.demo:DEMO"``). The settings say which shipped config trains, which registered
dataset's synthetic generator makes the data and with what options, how the shards are built, which variants
train (AV-PEA and its single-stream ablations), and three functions over the finished runs: ``measure`` (the
task's numbers and baselines), ``bar`` (the named checks the demo must pass) and ``report`` (the lines printed).
They live in the tasks layer, so a task's demo needs nothing from the trainer or the apps above it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

ABLATIONS: Mapping[str, tuple[str, ...]] = {"av_pea": ("model.modalities=av",),
                                            "audio_only": ("model.modalities=audio",),
                                            "visual_only": ("model.modalities=visual",)}
"""AV-PEA and the two single-stream ablations, each trained with its overrides before the user's."""

RUN_KEYS = ("best_val_score", "best_step", "step", "train_seconds", "wall_seconds", "run_dir")


@dataclass
class DemoOutcome:
    """What the harness hands ``measure`` and ``report`` once every variant has trained."""
    cfg: Any
    """The run config with the user's overrides and ``data.shards`` set to the demo's shards."""
    out: Path
    raw: Path
    """The synthetic release folder the dataset's generator wrote."""
    shards: Path
    manifest: dict[str, Any]
    results: dict[str, dict[str, Any]]
    """Variant name -> its run's result.json (``reused`` when a finished run was taken as it was)."""
    keep: dict[str, Any] = field(default_factory=dict)
    """Objects ``measure`` computes for ``report`` that summary.json does not hold (e.g. count tables)."""

    def run_dir(self, name: str) -> Path:
        return self.out / "runs" / name


@dataclass(frozen=True)
class DemoSettings:
    config: str
    """The shipped config trained by every variant (``configs/<config>.yaml``; ``--config`` replaces it)."""
    dataset: str
    """The registered dataset (``plugins.DatasetSpec``) whose synthetic generator makes the demo's data."""
    clips: int
    """Size of the synthetic set when ``--clips`` is not given."""
    synth: Callable[[Any, int, int], dict[str, Any]]
    """(cfg, clips, seed) -> the options of the dataset's ``SynthSource.make``."""
    measure: Callable[[DemoOutcome], dict[str, Any]]
    """-> the task's entries of summary.json (test metrics, baselines, margins)."""
    bar: Callable[[dict[str, Any], DemoOutcome], dict[str, bool]]
    """(summary, outcome) -> named checks; the demo passes (``ok``, exit 0) only when every one holds. The
    values ``measure`` kept unrounded in ``outcome.keep`` decide, so that rounding never flips a check."""
    report: Callable[[dict[str, Any], DemoOutcome], list[str]]
    """(summary, outcome) -> the lines printed after training (tables, timing, verdict)."""
    build: Mapping[str, Any] = field(default_factory=dict)
    """``BuildOptions`` fields besides ``workers`` and ``frame_size`` (the config's image size)."""
    variants: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(ABLATIONS))
    out: str = ""
    """Default ``--out`` (empty: runs/demo_<task>)."""
    size_key: str = "clips"
    """summary.json's name for the set size (what a clip is in this dataset: clips, videos)."""
    run_keys: tuple[str, ...] = RUN_KEYS
    """The entries of each run's result.json copied into summary.json's ``runs``."""
    next_steps: Callable[[Path, Path], str] | None = None
    """(out, shards) -> the line telling what to run next with the demo's shards and runs."""


def table_lines(title: str, rows: list[tuple[str, float | None]], *, percent: bool = True,
                width: int = 32) -> list[str]:
    """A blank line, ``title``, then one line per (name, value): a fraction shown in percent, or a plain number."""
    lines = ["", title]
    for name, value in rows:
        shown = "n/a" if value is None else f"{100 * value:6.2f} %" if percent else f"{value:8.4f}"
        lines.append(f"  {name:<{width}} {shown}")
    return lines


def timing_line(summary: dict[str, Any]) -> str:
    """The demo's time line: training + evaluation (or which finished runs were reused), data preparation."""
    reused = summary.get("reused_runs", [])
    if len(reused) == len(summary["runs"]):
        return (f"training + evaluation: reused the {len(reused)} finished runs (nothing trained; delete the run "
                f"folders or pass another --out to train again)")
    note = f"; reused {', '.join(reused)}" if reused else ""
    return (f"training + evaluation: {summary['train_seconds']:.0f} s{note} (data synthesis and shards: "
            f"{summary['data_seconds']:.0f} s)")


def failed_checks(summary: dict[str, Any]) -> list[str]:
    return [name for name, ok in summary["checks"].items() if not ok]


def beats(a: float | None, b: float | None) -> bool:
    """``a`` is measured and above ``b`` (an unmeasured ``b`` is beaten by any measured ``a``)."""
    return a is not None and (b is None or a > b)


def rounded(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)
