"""An AVEL timeline (one label per second, as `avpea predict` writes it) as events, a summary line and a
picture."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any


def events(timeline: dict[str, Any], background: str = "background") -> list[tuple[str, int, int, float]]:
    """Runs of one non-background label: (label, first second, end second, mean prob)."""
    runs: list[tuple[str, int, int, float]] = []
    for s in timeline["seconds"]:
        if runs and runs[-1][0] == s["label"] and runs[-1][2] == s["t"]:
            label, a, _, total = runs[-1]
            runs[-1] = (label, a, s["t"] + 1, total + s["prob"])
        else:
            runs.append((s["label"], s["t"], s["t"] + 1, s["prob"]))
    return [(label, a, b, total / (b - a)) for label, a, b, total in runs if label != background]


def summary_line(timeline: dict[str, Any], json_path: Path) -> str:
    found = events(timeline)
    text = ", ".join(f"{label} {a}-{b} s ({p:.2f})" for label, a, b, p in found) or "no event"
    return f"{timeline['video']}: {len(timeline['seconds'])} s; {text} -> {json_path.with_suffix('.*')}"


def timeline_png(timeline: dict[str, Any], classes: list[str]) -> bytes:
    """The timeline as coloured bars over the seconds (one colour per class, background grey), each event
    named over its run where the name fits and in the legend, and the winning probability below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    seconds = timeline["seconds"]
    n = len(seconds)
    cmap = plt.get_cmap("tab10" if len(classes) <= 11 else "tab20")
    events_only = [c for c in classes if c != "background"]
    colour = {c: cmap(k % cmap.N) for k, c in enumerate(events_only)}
    colour["background"] = "#d0d0d0"
    width = max(6.0, min(24.0, 0.3 * n + 2))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width, 3.0), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    top.broken_barh([(s["t"], 1) for s in seconds], (0, 1), facecolors=[colour.get(s["label"], "k") for s in seconds],
                    edgecolor="white", linewidth=0.5)
    chars_per_second = (width - 1.5) / n * 100 / 6  # ~6 px per character at fontsize 8 and 100 dpi
    for label, a, b, p in events(timeline):
        short = label.split(" (")[0]
        if len(short) <= chars_per_second * (b - a):
            top.text((a + b) / 2, 0.5, short, ha="center", va="center", fontsize=8, clip_on=True)
    present = [c for c in events_only if any(s["label"] == c for s in seconds)]
    if present:
        top.legend(handles=[Patch(color=colour[c], label=c) for c in present], loc="lower left",
                   bbox_to_anchor=(0, 1.02), ncol=min(4, len(present)), fontsize=7, frameon=False)
    top.set_yticks([])
    top.set_title(Path(timeline["video"]).name, fontsize=9, loc="right")
    bottom.step([s["t"] for s in seconds] + [n], [s["prob"] for s in seconds] + [seconds[-1]["prob"]],
                where="post", color="k", linewidth=1)
    bottom.set_ylim(0, 1.05)
    bottom.set_ylabel("prob", fontsize=8)
    bottom.set_xlim(0, n)
    bottom.set_xlabel("second")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
