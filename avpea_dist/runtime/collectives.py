"""Collectives on small host-side values, correct on gloo and NCCL and a no-op in a single process."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from .world import comm_device


def all_reduce_(t: torch.Tensor, op: Any = None) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        buf = t.to(comm_device())
        dist.all_reduce(buf, op=op or dist.ReduceOp.SUM)
        if buf is not t:
            t.copy_(buf)
    return t
