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


def scheduler_step_count(sched: Any) -> int:
    """An ``LRScheduler``'s ``_step_count`` (how often ``step`` ran, 1 after construction).

    Loading a state dict restores it, and resume must keep the live one while taking the rest of the state
    from the config; ``state_dict()`` exposes it only under the same private key.
    """
    return sched._step_count


def set_scheduler_last_lr(sched: Any, rates: list[float]) -> None:
    """Set what ``get_last_lr()`` returns (``_last_lr``) after the rates were put into the optimizer by hand.

    ``step()`` is the only public writer and it would advance the schedule; resume recomputes the current
    rates exactly as LambdaLR does and must leave the schedule's position where it is.
    """
    sched._last_lr = rates
