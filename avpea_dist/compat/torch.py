"""torch internals: the default timeout of new process groups, and an LR scheduler's bookkeeping.

Import the functions (``from ..compat.torch import ...``), never this module as a bare ``torch``.
"""

from __future__ import annotations

import datetime
from typing import Any

DIST = "torch"
CHECKED = ">=2.10,<2.15"
VERIFIED = "2.14.1"


def set_default_group_timeout(timeout: datetime.timedelta) -> None:
    """Make ``timeout`` the timeout of every process group created later without one.

    Reaches ``torch.distributed.distributed_c10d.default_pg_timeout`` (and ``default_pg_nccl_timeout``), the
    module globals ``new_group`` falls back on. DeepSpeed creates its gradient all-reduce group without a
    timeout, so without this a frozen rank stalls the others for torch's 30-minute default. There is no public
    setter: ``init_process_group(timeout=)`` covers the world group only.
    """
    from torch.distributed import distributed_c10d

    distributed_c10d.default_pg_timeout = timeout
    if hasattr(distributed_c10d, "default_pg_nccl_timeout"):  # absent from builds without NCCL
        distributed_c10d.default_pg_nccl_timeout = timeout


def scheduler_state_at_live_position(sched: Any, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` (an ``LRScheduler`` state dict) with ``sched``'s live position: ``last_epoch`` and the private
    ``_step_count`` (how often ``step`` ran, 1 after construction).

    Resume loads the configured schedule's state dict but must keep the position the checkpoint restored;
    ``load_state_dict`` sets both fields from the dict, and ``state_dict()`` names the count only by its
    private key.
    """
    return {**state, "last_epoch": sched.last_epoch, "_step_count": sched._step_count}


def set_scheduler_last_lr(sched: Any, rates: list[float]) -> None:
    """Set what ``get_last_lr()`` returns (``_last_lr``) after the rates were put into the optimizer by hand.

    ``step()`` is the only public writer and it would advance the schedule; resume recomputes the current
    rates exactly as LambdaLR does and must leave the schedule's position where it is.
    """
    sched._last_lr = rates


def scheduler_position(sched: Any) -> dict[str, int]:
    """The position fields of an ``LRScheduler``'s state dict: ``last_epoch`` and the private ``_step_count``
    (how often ``step`` ran); ``load_state_dict({**state, **position})`` puts them back."""
    state = sched.state_dict()
    return {k: int(state[k]) for k in ("last_epoch", "_step_count") if k in state}
