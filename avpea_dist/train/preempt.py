"""Preemption: a signal only sets a flag; the loop checks it at step boundaries, on all ranks together.

Slurm sends SIGUSR1 (``--signal``) or SIGTERM before it kills a job; submitit's requeue hook runs on
rank 0 only. Either way the handler must not save anything itself (a collective save from inside a
signal handler deadlocks), so it records the request and the loop all-reduces the flag at the next
step boundary: if any rank has it, every rank saves the same step and the run returns 'preempted'.
"""

from __future__ import annotations

import signal
from types import FrameType

_state = {"stop": False, "reason": ""}


def request_stop(reason: str = "requested") -> None:
    """Ask the loop to checkpoint and return at the next step boundary (async-signal-safe: sets a flag)."""
    if not _state["stop"]:
        _state["reason"] = reason
    _state["stop"] = True


def stop_requested() -> bool:
    return _state["stop"]


def stop_reason() -> str:
    return _state["reason"]


def clear() -> None:
    """Forget a request (a new run in the same process starts clean)."""
    _state["stop"] = False
    _state["reason"] = ""


def _handler(signum: int, frame: FrameType | None) -> None:
    request_stop(signal.Signals(signum).name)


def install_handlers(signals: tuple[int, ...] = (signal.SIGUSR1, signal.SIGTERM),
                     only_default: bool = False) -> dict[int, object]:
    """Route ``signals`` to ``request_stop``; returns the previous handlers (for ``restore_handlers``).

    ``only_default`` leaves alone a signal that already has a Python handler: a launcher (submitit's job,
    say) that installed its own, which calls ``request_stop`` and also decides on a requeue, keeps it.
    """
    previous = {}
    for sig in signals:
        if only_default and signal.getsignal(sig) not in (signal.SIG_DFL, None):
            continue
        previous[sig] = signal.signal(sig, _handler)
    return previous


def restore_handlers(previous: dict[int, object]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]
