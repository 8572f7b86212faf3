"""Preemption: a signal only sets a flag; the loop checks it at step boundaries, on all ranks together.

Slurm sends SIGUSR1 (``--signal``) or SIGTERM before it kills a job; submitit's requeue hook runs on
rank 0 only; Ctrl-C sends SIGINT to every process of the terminal's job (torchrun and its ranks alike). Either way the handler must not save anything itself (a collective save from inside a
signal handler deadlocks), so it records the request and the loop all-reduces the flag at the next
step boundary: if any rank has it, every rank saves the same step and the run returns 'preempted'.
"""

from __future__ import annotations

import os
import signal
import time
from types import FrameType

SAME_PRESS_S = 1.0
"""A second SIGINT this soon after the first is the same Ctrl-C (torchrun forwards the one it got to its
ranks within milliseconds); a later one means "now": the process exits at once, without saving."""

_state: dict = {"stop": False, "reason": "", "sigint_at": None}


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
    _state["sigint_at"] = None


def _handler(signum: int, frame: FrameType | None) -> None:
    if signum == signal.SIGINT:
        now, first = time.monotonic(), _state["sigint_at"]
        if first is not None and now - first > SAME_PRESS_S:
            os.write(2, b"second Ctrl-C: exiting now, without saving (the last checkpoint stays usable)\n")
            os._exit(130)
        if first is None:
            _state["sigint_at"] = now
    request_stop(signal.Signals(signum).name)


def _is_default(handler: object) -> bool:
    # Python installs its own SIGINT handler (KeyboardInterrupt) in every process: that one counts as default.
    return handler in (signal.SIG_DFL, None, signal.default_int_handler)


def install_handlers(signals: tuple[int, ...] = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT),
                     only_default: bool = False) -> dict[int, object]:
    """Route ``signals`` to ``request_stop``; returns the previous handlers (for ``restore_handlers``).

    ``only_default`` leaves alone a signal that already has a Python handler: a launcher (submitit's job,
    say) that installed its own, which calls ``request_stop`` and also decides on a requeue, keeps it.
    """
    previous = {}
    for sig in signals:
        if only_default and not _is_default(signal.getsignal(sig)):
            continue
        previous[sig] = signal.signal(sig, _handler)
    return previous


def restore_handlers(previous: dict[int, object]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]
