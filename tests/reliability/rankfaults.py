"""What a rank of a fault-injection job does: record its work, plant its faults, run the real entry point.

Every rank appends to ``LOG/rank<R>.events.jsonl``: the batches it fetched (epoch, index, sample keys,
skipped count), each optimizer step (applied?, a digest of parameters + optimizer + scheduler + DeepSpeed
step counters before and after), each checkpoint it began, saved or loaded, and the moment a fault
fired. Lines are flushed as written, so they survive a SIGKILL.

Faults are dicts ``{"kind", "at", "nth", "rank", ...}``; ``rank`` is 0, 1 or "all", and ``nth`` counts
occurrences of the hook point ``at`` within this process:

* ``kill``: SIGKILL at a point - ``step`` (start of a step), ``backward`` (after a local backward, before
  the gradient all-reduce), ``batch``, ``eval``, ``save`` (start of a save), ``ckpt_file`` (mid-file:
  some bytes written, then death), ``manifest``, ``latest``, ``prune`` (one file of the old checkpoint
  deleted, then death), ``barrier``; or ``at="timer"`` with ``delay`` seconds after the first batch,
  from a thread, wherever the main thread is.
* ``freeze``: SIGSTOP at a point (alive, holding its sockets, answering nothing).
* ``signal``: send ``sig`` (e.g. "SIGUSR1") to itself at a point, as Slurm does before preempting.
* ``enospc``: every checkpoint write of the ``nth`` save fails with ENOSPC after its first bytes.
* ``nonfinite``: from step call ``nth`` for ``count`` calls, ``mode="loss"`` multiplies the loss by
  ``value`` ("nan"/"inf"); ``mode="grad"`` keeps the loss and makes the logits' gradient ``value``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Iterator

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


_saving = {"n": 0, "active": False}  # which checkpoint save this rank is in, if any


def _record_batches_and_steps() -> None:
    import deepspeed.runtime.engine as ds_engine

    import avpea_dist.train.run as run
    from avpea_dist.train.data_source import ShardData

    real_batches = ShardData.train_batches

    def train_batches(self: ShardData, epoch: int, start_batch: int) -> Iterator[dict[str, Any]]:
        for i, batch in enumerate(real_batches(self, epoch, start_batch)):
            _hook("batch")
            _event("batch", epoch=epoch, index=start_batch + i, keys=list(batch["key"]),
                   skipped=int(batch.get("skipped", 0)))
            yield batch

    ShardData.train_batches = train_batches  # type: ignore[method-assign]
    real_step = run.train_step

    def train_step(engine: Any, group: Any, device: Any, modalities: str) -> Any:
        n = _tick("step_call")
        _hook("step")
        before = state_digest(engine)
        r = real_step(engine, group, device, modalities)
        _event("step", call=n, applied=r.applied, loss=r.loss, bad=r.bad, seen=r.seen, before=before,
               after=state_digest(engine), global_steps=engine.global_steps)
        return r

    run.train_step = train_step
    real_backward = ds_engine.DeepSpeedEngine.backward

    def backward(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = real_backward(self, *args, **kwargs)
        _hook("backward")  # the local backward is done; the step's all-reduces are still ahead
        return out

    ds_engine.DeepSpeedEngine.backward = backward
    real_eval = run.evaluate

    def evaluate(*args: Any, **kwargs: Any) -> Any:
        _hook("eval")
        return real_eval(*args, **kwargs)

    run.evaluate = evaluate


def _plant_nonfinite() -> None:
    import torch

    import avpea_dist.train.loop as loop

    real_loss = loop.segment_loss

    def segment_loss(logits: Any, labels: Any) -> Any:
        n = _rank["counts"].get("step_call", 0)
        spec = next((s for s in _rank["faults"]
                     if s["kind"] == "nonfinite" and s["nth"] <= n < s["nth"] + s.get("count", 1)), None)
        if spec is None:
            return real_loss(logits, labels)
        _event("fault", kind="nonfinite", mode=spec["mode"], step_call=n)
        bad = float(spec.get("value", "nan"))
        if spec["mode"] == "grad":  # a finite loss, a non-finite gradient
            logits.register_hook(lambda g: torch.full_like(g, bad))
            return real_loss(logits, labels)
        return real_loss(logits, labels) * bad

    loop.segment_loss = segment_loss


def _record_and_plant_in_checkpoints() -> None:
    import contextlib

    import torch.distributed as dist

    import avpea_dist.fileio as avio
    import avpea_dist.train.checkpoint as ckpt
    import avpea_dist.train.run as run

    real_save, real_load = run.save_checkpoint, run.load_checkpoint

    def save_checkpoint(engine: Any, root: Any, step: int, *args: Any, **kwargs: Any) -> Any:
        _saving["n"] += 1
        _saving["active"] = True
        _event("save_begin", step=step, n=_saving["n"])
        _hook("save")
        try:
            folder = real_save(engine, root, step, *args, **kwargs)
        finally:
            _saving["active"] = False
        _event("save", step=step)
        return folder

    def load_checkpoint(engine: Any, folder: Path) -> Any:
        state = real_load(engine, folder)
        _event("load", folder=str(folder), step=state["step"], digest=state_digest(engine))
        return state

    run.save_checkpoint, run.load_checkpoint = save_checkpoint, load_checkpoint
    real_open = avio.atomic_open

    @contextlib.contextmanager
    def atomic_open(path: Any, mode: str = "wb") -> Iterator[Any]:
        with real_open(path, mode) as f:
            if "checkpoints" not in Path(path).parts:
                yield f
                return
            point = {"manifest.json": "manifest", "latest": "latest"}.get(Path(path).name, "ckpt_file")
            n = _tick(point)
            if _saving["active"] and _due("enospc", "save", _saving["n"]):
                _event("fault", kind="enospc", file=str(path))
                yield _Torn(f, errno.ENOSPC)
            elif _due("kill", point, n):
                yield _Torn(f, None, point, n)
            else:
                spec = _due("signal", point, n)
                if spec:
                    _event("fault", kind="signal", at=point, nth=n, sig=spec["sig"])
                    os.kill(os.getpid(), getattr(signal, spec["sig"]))
                yield f

    avio.atomic_open = ckpt.atomic_open = atomic_open  # io's own writers and checkpoint's direct use
    real_rmtree = shutil.rmtree

    def rmtree(path: Any, *args: Any, **kwargs: Any) -> Any:
        n = _tick("prune")
        if _due("kill", "prune", n):  # die half-way through deleting an old checkpoint
            files = sorted(p for p in Path(path).iterdir() if p.is_file())
            if files:
                files[0].unlink()
            _die("prune", n)
        return real_rmtree(path, *args, **kwargs)

    class _Shutil:  # checkpoint.py's view of shutil: its rmtree calls (and only its) can be interrupted
        def __getattr__(self, name: str) -> Any:
            return getattr(shutil, name)

    _Shutil.rmtree = staticmethod(rmtree)  # type: ignore[attr-defined]
    ckpt.shutil = _Shutil()
    real_barrier = dist.barrier

    def barrier(*args: Any, **kwargs: Any) -> Any:
        _hook("barrier")
        return real_barrier(*args, **kwargs)

    dist.barrier = barrier


def install_faults(rank: int, faults: list[dict[str, Any]], log_dir: Path) -> None:
    """Wrap the real functions with recorders and plant this rank's faults."""
    _rank.update(r=rank, faults=[f for f in faults if f.get("rank", rank) in (rank, "all")],
                 events=open(log_dir / f"rank{rank}.events.jsonl", "a"))
    _event("start", pid=os.getpid())
    _record_batches_and_steps()
    _plant_nonfinite()
    _record_and_plant_in_checkpoints()


def rank_main(rank: int, job: dict[str, Any]) -> int:
    log_dir = Path(job["log_dir"])
    out = os.open(log_dir / f"rank{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(job["world"]),
                      LOCAL_WORLD_SIZE=str(job["world"]), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(job["port"]),
                      OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    install_faults(rank, job["faults"], log_dir)
    import faulthandler  # a rank still alive near the deadline prints where it waits, into its log

    faulthandler.dump_traceback_later(max(1.0, job["deadline_s"] - 5), exit=False)
    from avpea_dist.train.entry import main

    overrides = job["overrides"] + job.get("rank_overrides", {}).get(str(rank), [])
    return main([job["config"], *overrides])


