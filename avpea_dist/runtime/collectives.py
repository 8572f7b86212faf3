"""The collectives the trainer runs across ranks, each a no-op in a single process.

"Single process" means no process group, or a world of one: tests, ``avpea predict`` and one-rank runs
call the same code paths as a multi-rank run without a launcher. Tensors travel through
``world.comm_device()`` (the GPU for NCCL, the CPU for gloo) and come back where they were. Python objects
travel through torch's ``all_gather_object`` / ``broadcast_object_list``: they are exchanged between this
run's own ranks only, never read from disk or the network.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from .world import comm_device


def distributed() -> bool:
    """True when there are other ranks to talk to."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_size() -> tuple[int, int]:
    """(this rank, number of ranks); (0, 1) in a single process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_(t: torch.Tensor, op: Any = None) -> torch.Tensor:
    """``t`` reduced over ranks in place (SUM unless ``op``), and returned."""
    if distributed():
        buf = t.to(comm_device())
        dist.all_reduce(buf, op=op or dist.ReduceOp.SUM)
        if buf is not t:
            t.copy_(buf)
    return t


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (ranks may hold objects of different sizes)."""
    if not distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_from_first(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (the others pass anything, e.g. None)."""
    if not distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
