"""Which samples each optimizer step saw (``train.log_samples``): ``RUN/samples/epoch_<e>.jsonl``.

Rank 0 gathers the sample keys of every global batch from all ranks and appends one line per optimizer step
to its epoch's file: ``{"epoch", "step", "world_size", "keys": [sorted], "batch", "epoch_batches"}`` (``batch``:
the global batch within the epoch; ``step``: the optimizer step it was for, 1-based, shared by a skipped step
and its retry). Lines are flushed and fsynced as written, as ``metrics.jsonl``'s are; on resume (and on a
fresh start) the files are first rewritten atomically to the lines before the restored data position, so
a resumed run's files read like an uninterrupted run's. ``check_samples`` is what ``avpea run samples
--check`` reports.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_text
from .metrics import append_jsonl, read_jsonl

SAMPLES_DIR = "samples"
_FILE = re.compile(r"^epoch_(\d+)\.jsonl$")


def epoch_files(run_dir: str | Path) -> dict[int, Path]:
    """{epoch: its file} of a run folder's samples log."""
    folder = Path(run_dir) / SAMPLES_DIR
    if not folder.is_dir():
        return {}
    return dict(sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _FILE.match(p.name))))


class SamplesLog:
    """Rank 0's writer; on other ranks (and with the setting off) only ``gather`` takes part."""

    def __init__(self, run_dir: Path, enabled: bool, main: bool, epoch: int, batch: int) -> None:
        self.enabled, self.main = enabled, main
        self.folder = Path(run_dir) / SAMPLES_DIR
        if not (enabled and main):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for e, path in epoch_files(run_dir).items():
            kept = [r for r in read_jsonl(path) if (e, int(r.get("batch", -1))) < (epoch, batch)]
            if e > epoch or not kept:
                path.unlink()
            else:
                atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))

    def record(self, keys: list[str], *, epoch: int, batch: int, step: int, epoch_batches: int) -> None:
        """Gather this rank's ``keys`` of global batch ``batch`` (a collective when enabled); rank 0 writes."""
        if not self.enabled:
            return
        import torch.distributed as dist

        world = dist.get_world_size() if dist.is_initialized() else 1
        everyone: list[Any] = [keys]
        if world > 1:
            everyone = [None] * world
            dist.all_gather_object(everyone, list(keys))
        if self.main:
            line = {"epoch": epoch, "step": step, "world_size": world,
                    "keys": sorted(k for part in everyone for k in part), "batch": batch,
                    "epoch_batches": epoch_batches}
            append_jsonl(self.folder / f"epoch_{epoch}.jsonl", line)


def check_samples(run_dir: str | Path, split_size: int, sampling: str = "sequential") -> list[dict[str, Any]]:
    """Per epoch: lines, distinct samples, repeats (a sample in two global batches, or twice in one), and for
    a finished epoch (its last global batch logged) the samples missing beyond the ``split_size % G`` the
    epoch leaves over; ``ok`` is False on any repeat or such a missing sample. With ``sampling='balanced'``
    (weighted draws with replacement) repeats and missing samples are the design: they are reported, and only
    a global batch logged twice (data seen again after a resume) is a failure."""
    rows = []
    for epoch, path in epoch_files(run_dir).items():
        lines = read_jsonl(path)
        keys = [k for r in lines for k in r.get("keys", [])]
        distinct = len(set(keys))
        batches = sorted({int(r.get("batch", -1)) for r in lines})
        epoch_batches = max((int(r.get("epoch_batches", 0)) for r in lines), default=0)
        finished = bool(lines) and epoch_batches > 0 and batches == list(range(epoch_batches))
        per_batch = len(lines[0].get("keys", [])) if lines else 0
        expected = min(split_size, epoch_batches * per_batch) if finished else None
        missing = (expected - distinct) if expected is not None else None
        drawn = sampling == "balanced"
        if drawn:
            missing = None
        rows.append({"epoch": epoch, "steps_logged": len(lines), "distinct": distinct, "split_size": split_size,
                     "repeats": len(keys) - distinct, "duplicate_batches": len(lines) - len(batches),
                     "finished": finished, "missing": missing,
                     "sampling": sampling,
                     "ok": len(lines) == len(batches) and (drawn or (len(keys) == distinct and not missing))})
    return rows
