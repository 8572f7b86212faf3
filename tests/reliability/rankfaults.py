"""What a rank of a fault-injection job does: record its work, plant its faults, run the real entry point.

Everything goes through the hook points the trainer offers (``avpea_dist.train.hooks.TrainHooks``, passed
to ``entry.main``): no production name is replaced.

Every rank appends to ``LOG/rank<R>.events.jsonl``: the batches it fetched (epoch, index, sample keys,
skipped count), each optimizer step (applied?, a digest of parameters + optimizer + scheduler + DeepSpeed
step counters before and after), each checkpoint it began, saved or loaded, and the moment a fault
fired. Lines are flushed as written, so they survive a SIGKILL.

Faults are dicts ``{"kind", "at", "nth", "rank", ...}``; ``rank`` is 0, 1 or "all", and ``nth`` counts
occurrences of the hook point ``at`` within this process:

* ``kill``: SIGKILL at a point - ``step`` (start of a step), ``backward`` (after a local backward, before
  the gradient all-reduce), ``batch``, ``eval``, ``save`` (start of a save), ``ckpt_file`` (mid-file:
  some bytes written, then death), ``manifest``, ``latest``, ``prune`` (one file of the old checkpoint
  deleted, then death), ``barrier`` (entering a barrier of a checkpoint save, the trainer's or
  DeepSpeed's); or ``at="timer"`` with ``delay`` seconds after the first batch,
  from a thread, wherever the main thread is.
* ``freeze``: SIGSTOP at a point (alive, holding its sockets, answering nothing).
* ``signal``: send ``sig`` (e.g. "SIGUSR1") to itself at a point, as Slurm does before preempting.
* ``enospc``: every checkpoint write of the ``nth`` save fails with ENOSPC after its first bytes.
* ``nonfinite``: from step call ``nth`` for ``count`` calls, ``mode="loss"`` multiplies the loss by
  ``value`` ("nan"/"inf"); ``mode="grad"`` keeps the loss and makes the logits' gradient ``value``.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from avpea_dist.train.hooks import TrainHooks

_rank = {"r": -1, "events": None, "faults": [], "counts": {}}


def _event(ev: str, **data: Any) -> None:
    f = _rank["events"]
    f.write(json.dumps({"ev": ev, "t": time.time(), **data}) + "\n")
    f.flush()


def _tick(point: str) -> int:
    """Count one occurrence of ``point`` on this rank; returns its 1-based index."""
    n = _rank["counts"].get(point, 0) + 1
    _rank["counts"][point] = n
    return n


def _due(kind: str, point: str, n: int) -> dict[str, Any] | None:
    for spec in _rank["faults"]:
        if spec["kind"] == kind and spec.get("at") == point and spec["nth"] <= n < spec["nth"] + spec.get("count", 1):
            return spec
    return None


def _descendants() -> list[int]:
    """This process's children, grandchildren... (loader workers and their forkserver, say)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, frontier = [], [os.getpid()]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def _die(point: str, n: int) -> None:
    _event("fault", kind="kill", at=point, nth=n, descendants=_descendants())
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached: SIGKILL cannot be caught


def _arm_timer() -> None:
    """``{"kind": "kill", "at": "timer", "delay": s}``: die ``s`` seconds after the first batch, from a
    thread, wherever the main thread happens to be (a truly asynchronous kill point)."""
    import threading

    for spec in _rank["faults"]:
        if spec["kind"] == "kill" and spec.get("at") == "timer" and not spec.get("armed"):
            spec["armed"] = True
            threading.Timer(spec["delay"], _die, ("timer", 1)).start()


def _hook(point: str) -> None:
    """A place where a kill or a preemption signal may be planted."""
    n = _tick(point)
    if point == "batch" and n == 1:
        _arm_timer()
    if _due("kill", point, n):
        _die(point, n)
    if _due("freeze", point, n):  # alive but unresponsive, as a rank on a hung node or a stuck filesystem
        _event("fault", kind="freeze", at=point, nth=n)
        os.kill(os.getpid(), signal.SIGSTOP)
    spec = _due("signal", point, n)
    if spec:
        _event("fault", kind="signal", at=point, nth=n, sig=spec["sig"])
        os.kill(os.getpid(), getattr(signal, spec["sig"]))


def state_digest(engine: Any) -> str:
    """sha256 of everything a skipped step must leave bitwise unchanged."""
    import torch

    h = hashlib.sha256()

    def add(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            h.update(obj.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, dict):
            for k in sorted(obj, key=str):
                h.update(str(k).encode())
                add(obj[k])
        elif isinstance(obj, (list, tuple)):
            for x in obj:
                add(x)
        else:
            h.update(repr(obj).encode())

    add({n: p for n, p in engine.module.named_parameters() if p.requires_grad})
    opt = engine.optimizer
    inner = getattr(opt, "optimizer", opt)  # ZeRO wraps the client AdamW
    add(inner.state_dict()["state"])
    add(list(getattr(opt, "single_partition_of_fp32_groups", [])))  # ZeRO-1/2: the fp32 master partitions
    add(engine.lr_scheduler.state_dict() if engine.lr_scheduler is not None else None)
    add([engine.global_steps, engine.global_samples])
    return h.hexdigest()[:16]


class _Torn:
    """Wraps a checkpoint file being written: a few bytes reach the disk, then the write fails with
    ``reason`` (ENOSPC: a full disk) or, with ``reason=None``, the process dies by SIGKILL mid-file."""

    def __init__(self, f: Any, reason: int | None, point: str = "", n: int = 0) -> None:
        self.f, self.reason, self.point, self.n = f, reason, point, n

    def write(self, data: Any) -> int:
        self.f.write(bytes(data)[:64])
        self.f.flush()
        os.fsync(self.f.fileno())
        if self.reason is None:
            _die(self.point, self.n)
        raise OSError(self.reason, os.strerror(self.reason))  # as write(2) reports it: no file name

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)


class FaultHooks(TrainHooks):
    """The run's hook points (``avpea_dist/train/hooks.py``): record the rank's work, fire its faults."""

    def __init__(self) -> None:
        self.saves = 0  # which checkpoint save this rank is in (or last was in)

    def on_batch(self, epoch: int, index: int, batch: dict[str, Any]) -> None:
        _hook("batch")
        _event("batch", epoch=epoch, index=index, keys=list(batch["key"]), skipped=int(batch.get("skipped", 0)))

    def before_step(self, engine: Any) -> None:
        self.step_call = _tick("step_call")
        _hook("step")
        self.before = state_digest(engine)

    def after_step(self, engine: Any, r: Any) -> None:
        _event("step", call=self.step_call, applied=r.applied, loss=r.loss, bad=r.bad, seen=r.seen,
               before=self.before, after=state_digest(engine), global_steps=engine.global_steps)

    def on_loss(self, outputs: Any, batch: dict[str, Any], loss: Any) -> Any:
        import torch

        n = _rank["counts"].get("step_call", 0)
        spec = next((s for s in _rank["faults"]
                     if s["kind"] == "nonfinite" and s["nth"] <= n < s["nth"] + s.get("count", 1)), None)
        if spec is None:
            return loss
        _event("fault", kind="nonfinite", mode=spec["mode"], step_call=n)
        bad = float(spec.get("value", "nan"))
        if spec["mode"] == "grad":  # a finite loss, a non-finite gradient
            outputs.register_hook(lambda g: torch.full_like(g, bad))
            return loss
        return dataclasses.replace(loss, loss=loss.loss * bad)

    def after_backward(self, micro: int) -> None:
        _hook("backward")  # the local backward is done; the step's all-reduces are still ahead

    def before_eval(self, split: str) -> None:
        _hook("eval")

    def before_save(self, step: int) -> None:
        self.saves += 1
        _event("save_begin", step=step, n=self.saves)
        _hook("save")

    def after_save(self, step: int, folder: Path) -> None:
        _event("save", step=step)

    def after_load(self, engine: Any, folder: Path, state: dict[str, Any]) -> None:
        _event("load", folder=str(folder), step=state["step"], digest=state_digest(engine))

    def checkpoint_file(self, path: Path, f: Any) -> Any:
        point = {"manifest.json": "manifest", "latest": "latest"}.get(path.name, "ckpt_file")
        n = _tick(point)
        if _due("enospc", "save", self.saves):
            _event("fault", kind="enospc", file=str(path))
            return _Torn(f, errno.ENOSPC)
        if _due("kill", point, n):
            return _Torn(f, None, point, n)
        spec = _due("signal", point, n)
        if spec:
            _event("fault", kind="signal", at=point, nth=n, sig=spec["sig"])
            os.kill(os.getpid(), getattr(signal, spec["sig"]))
        return f

    def before_prune(self, folder: Path) -> None:
        n = _tick("prune")
        if _due("kill", "prune", n):  # die half-way through deleting an old checkpoint
            files = sorted(p for p in folder.iterdir() if p.is_file())
            if files:
                files[0].unlink()
            _die("prune", n)

    def before_barrier(self) -> None:
        _hook("barrier")


def install_faults(rank: int, faults: list[dict[str, Any]], log_dir: Path) -> FaultHooks:
    """Open this rank's event log and arm its faults; -> the hooks that record and fire them."""
    _rank.update(r=rank, faults=[f for f in faults if f.get("rank", rank) in (rank, "all")],
                 events=open(log_dir / f"rank{rank}.events.jsonl", "a"))
    _event("start", pid=os.getpid())
    return FaultHooks()


def rank_main(rank: int, job: dict[str, Any]) -> int:
    log_dir = Path(job["log_dir"])
    out = os.open(log_dir / f"rank{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(job["world"]),
                      LOCAL_WORLD_SIZE=str(job["world"]), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(job["port"]),
                      OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    hooks = install_faults(rank, job["faults"], log_dir)
    import faulthandler  # a rank still alive near the deadline prints where it waits, into its log

    faulthandler.dump_traceback_later(max(1.0, job["deadline_s"] - 5), exit=False)
    from avpea_dist.train.entry import main

    overrides = job["overrides"] + job.get("rank_overrides", {}).get(str(rank), [])
    return main([job["config"], *overrides], hooks=hooks)


