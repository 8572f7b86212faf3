"""What a run reports: JSON lines (the record), the trackers of ``train.loggers`` (TensorBoard events by default;
Weights & Biases, MLflow: see trackers.py), a progress bar (the eye).

Train lines carry the loss, the rates, throughput and data position, and (when the step reports them)
the training accuracy and gradient norm since the previous line, the count of damaged-shard reports and
each adapter's gate magnitude per block (``gates``: {'mlp_a': [block 0, block 1, ...], ...}). Val and test
lines carry the accuracy overall and on event vs background segments and the samples the loader skipped.
New fields are only ever added, so readers of older files keep working.

Only rank 0 writes. ``metrics.jsonl`` gets one JSON object per line, flushed and fsynced as it is
written; on resume it is first rewritten atomically to the lines of steps the checkpoint covers, so a
resumed run's file reads exactly like an uninterrupted run's (a line torn by a crash is dropped too).
TensorBoard drops the same events with ``purge_step``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_text
from .trackers import Trackers, check_installed


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The valid JSON objects of a metrics file, in order (a torn last line is ignored)."""
    out = []
    path = Path(path)
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


class MetricsLog:
    def __init__(self, run_dir: Path, enabled: bool, resume_step: int | None, total_steps: int,
                 progress: bool, clips_per_step: int, loggers: list[str] | tuple[str, ...] = ("tensorboard",),
                 config: dict[str, Any] | None = None, project: str = "avpea") -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self._trackers: Trackers | None = None
        self._bar = None
        self._clips_per_step = clips_per_step
        self._t_last = time.perf_counter()
        self._step_last = resume_step or 0
        check_installed(loggers)  # on every rank: a missing tracker stops them all, at once, with the pip line
        if not enabled:
            return
        kept = [r for r in read_jsonl(self.path) if resume_step is not None and r.get("step", 0) <= resume_step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._trackers = Trackers(loggers, run_dir, resume_step, config or {}, project)
        if progress and not os.environ.get("TQDM_DISABLE"):
            from tqdm import tqdm
            self._bar = tqdm(total=total_steps, initial=resume_step or 0, unit="step", dynamic_ncols=True,
                             desc="train")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        append_jsonl(self.path, record)
        if self._trackers is not None:
            self._trackers.log(record)

    def train_step(self, step: int, loss: float, lrs: list[float], epoch: int, data_digest: int, log: bool,
                   extra: dict[str, Any] | None = None) -> None:
        """Called after every applied step; writes a metrics line (with ``extra``'s fields) when ``log``."""
        if not self.enabled:
            return
        now = time.perf_counter()
        throughput = self._clips_per_step * (step - self._step_last) / max(now - self._t_last, 1e-9)
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix(loss=f"{loss:.4f}", clips_s=f"{throughput:.1f}", refresh=False)
        if log:
            extra = dict(extra or {})
            gates = extra.pop("gates", None)
            self.write({"step": step, "split": "train", "loss": loss, "lr_adapter": lrs[0], "lr_head": lrs[-1],
                        "clips_per_s": round(throughput, 3), "epoch": epoch, "data_digest": data_digest,
                        "time": time.time(), **extra, **({"gates": gates} if gates else {})})
            if gates and self._trackers is not None:
                self._trackers.log_scalars({f"gates/{name}/block_{i:02d}": v for name, per_block in gates.items()
                                      for i, v in enumerate(per_block)}, step)
            self._t_last, self._step_last = now, step

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._trackers is not None:
            self._trackers.close()


class TrainStats:
    """Training accuracy and gradient norm accumulated between two metrics lines.

    Reads ``correct``, ``segments`` and ``grad_norm`` from each applied step's result (contract 6); a
    step result without them (an older ``train_step``) adds nothing and the fields stay out of the line.
    """

    def __init__(self) -> None:
        self.correct = self.segments = 0
        self.norms: list[float] = []

    def add(self, result: Any) -> None:
        correct, segments = getattr(result, "correct", None), getattr(result, "segments", None)
        if correct is not None and segments:
            self.correct += int(correct)
            self.segments += int(segments)
        norm = getattr(result, "grad_norm", None)
        if norm is not None and norm == norm:
            self.norms.append(float(norm))

    def flush(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.segments:
            out["accuracy"] = self.correct / self.segments
        if self.norms:
            out["grad_norm"] = sum(self.norms) / len(self.norms)
            out["grad_norm_max"] = max(self.norms)
        self.__init__()
        return out
