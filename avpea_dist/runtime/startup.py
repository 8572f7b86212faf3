"""Process start-up, decided in one place for every entry point.

The `avpea` command, the torchrun entry (one rank), a submitit task, a Ray Tune trial and the demo all
call ``start_process`` (or the one piece they need) before anything imports DeepSpeed:

- the DeepSpeed accelerator (``DS_ACCELERATOR``, read by DeepSpeed once, at import);
- logging (one format; DeepSpeed and torch's extension builder kept to warnings that matter);
- threads per rank (one rank's share of the CPUs, whatever the launcher: without it two ranks of a local
  job each start one thread per core and crowd each other);
- free and per-job rendezvous ports;
- for a rank under torchrun: leaving within seconds when the launcher dies, and sending the output of
  ranks other than 0 to a log file, so the terminal shows what a user reads.

Light at import (standard library only): the CLI imports it for every command.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from .ports import free_port, rendezvous_port  # noqa: F401 (the launchers' one import)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PARENT_GRACE_S = 30.0
"""After the launcher died: seconds a rank gets to reach a step boundary and save before it exits anyway."""


def choose_accelerator() -> str:
    """Set ``DS_ACCELERATOR`` (kept when the user set it): 'cuda' where a GPU is usable, else 'cpu'.

    DeepSpeed's own detection falls back to CPU with a warning on every rank; deciding here is silent and
    the same in every process. The driver's device file is checked first so that a CPU machine never
    initialises CUDA just to find out."""
    name = os.environ.get("DS_ACCELERATOR")
    if not name:
        name = "cuda" if _gpu_usable() else "cpu"
        os.environ["DS_ACCELERATOR"] = name
    return name


def _gpu_usable() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1") or not os.path.exists("/dev/nvidiactl"):
        return False
    import torch

    return torch.cuda.is_available()


def setup_logging(verbose: bool = False) -> None:
    """One format for every process; DeepSpeed's and torch's build chatter below warnings is dropped."""
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    if root.handlers:
        root.setLevel(level)
    else:
        logging.basicConfig(level=level, format=LOG_FORMAT)
    logging.getLogger("DeepSpeed").setLevel(logging.DEBUG if verbose else logging.WARNING)
    # "No CUDA runtime is found, using CUDA_HOME=..." on every CPU rank: true, and of no use to a user.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.DEBUG if verbose else logging.ERROR)


def threads_per_rank() -> int:
    """Threads for this rank's math: ``OMP_NUM_THREADS`` when set (Slurm scripts, torchrun), else the
    task's CPUs (``SLURM_CPUS_PER_TASK``), else this machine's CPUs shared by the ranks on the node."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit() and "SUBMITIT_LOCAL_JOB_ID" not in os.environ:
        return max(1, int(os.environ["SLURM_CPUS_PER_TASK"]))
    from .world import world_info_from_env

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, world_info_from_env().local_world_size))


def set_threads(n: int | None = None) -> int:
    """Apply ``threads_per_rank()`` (or ``n``) to this process and to the processes it starts."""
    n = n or threads_per_rank()
    os.environ["OMP_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:  # torch read the variable at import; tell it directly
        sys.modules["torch"].set_num_threads(n)
    return n


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ


def start_process(verbose: bool = False, *, threads: bool = True) -> None:
    """What every entry point does first: accelerator, logging, and (for a rank) its thread count."""
    choose_accelerator()
    setup_logging(verbose)
    if threads:
        set_threads()


# ---------------------------------------------------------------------------------------------
# A rank under a launcher


def exit_with_parent(grace_s: float = PARENT_GRACE_S, interval_s: float = 0.5) -> None:
    """When the launcher that started this rank dies, ask the loop to save and stop (every rank notices,
    so they stop at the same step), and leave after ``grace_s`` at the latest.

    A watchdog on ``os.getppid()`` rather than PR_SET_PDEATHSIG: the latter fires when the launcher's
    *thread* that started us exits, which torchrun does not promise to keep alive."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        from . import preempt

        _say(f"rank {os.environ.get('RANK', '?')}: the launcher (pid {parent}) is gone; saving and stopping")
        preempt.request_stop("launcher gone")
        time.sleep(grace_s)
        _say(f"rank {os.environ.get('RANK', '?')}: still running {grace_s:.0f} s after the launcher died; exiting")
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


_TERMINAL: dict[str, TextIO] = {}


def _say(line: str) -> None:
    stream = _TERMINAL.get("stderr", sys.stderr)
    print(line, file=stream, flush=True)


def terminal() -> TextIO:
    """The stream a user reads: the original stderr, even after ``quiet_rank`` moved the rank's output."""
    return _TERMINAL.get("stderr", sys.stderr)


def quiet_rank(log_file: Path) -> None:
    """Send this rank's stdout and stderr (Python's and C-level prints alike) to ``log_file``; errors meant
    for the user still reach the terminal through ``terminal()``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    if "stderr" not in _TERMINAL:
        _TERMINAL["stderr"] = os.fdopen(os.dup(2), "w", buffering=1)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
