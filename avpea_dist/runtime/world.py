"""Where this process sits in the job, read from the environment alone.

The same code runs under torchrun, the deepspeed launcher, plain ``srun`` and submitit: each of
them exports either torch's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) or
Slurm's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_JOB_NODELIST). Nothing is hand-set by flags.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from dataclasses import dataclass

from .ports import free_port, rendezvous_port


@dataclass(frozen=True)
class WorldInfo:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    master_addr: str
    master_port: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _first_host(nodelist: str) -> str:
    """First host of a Slurm nodelist such as ``gpu[003-005,9],cpu1`` without needing scontrol."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=10, check=True).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if not m:
        return nodelist
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def world_info_from_env() -> WorldInfo:
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun, deepspeed launcher, submitit's export()
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local_rank = int(env.get("LOCAL_RANK", 0))
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:  # plain srun
        rank, world = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        local_rank = int(env.get("SLURM_LOCALID", 0))
        local_world = int(env.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0]) if world > 1 else 1
    else:
        rank, world, local_rank, local_world = 0, 1, 0, 1
    if "MASTER_ADDR" in env:
        addr = env["MASTER_ADDR"]
    elif "SLURM_JOB_NODELIST" in env:
        addr = _first_host(env["SLURM_JOB_NODELIST"])
    else:
        addr = "127.0.0.1"
    port = int(env.get("MASTER_PORT") or rendezvous_port(env.get("SLURM_JOB_ID"), 29500))
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside world size {world}: check RANK/WORLD_SIZE or SLURM_PROCID/SLURM_NTASKS")
    return WorldInfo(rank, local_rank, world, local_world, addr, port)


def export_torch_env(info: WorldInfo) -> None:
    """Make torch/DeepSpeed see the world we derived (they read these variables)."""
    os.environ.update(RANK=str(info.rank), LOCAL_RANK=str(info.local_rank), WORLD_SIZE=str(info.world_size),
                      LOCAL_WORLD_SIZE=str(info.local_world_size), MASTER_ADDR=info.master_addr,
                      MASTER_PORT=str(info.master_port))


# ---------------------------------------------------------------------------------------------
# Process group lifetime. Every rank calls ``init_process_group`` once at start and ``teardown`` once
# at exit; both are no-ops where there is nothing to do, so a single process needs no launcher.


def resolve_backend(backend: str = "auto") -> str:
    import torch

    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("dist.backend='nccl' needs CUDA GPUs; use dist.backend=gloo (or auto) on CPU")
    return backend


_OWN_PORT_VAR = "AVPEA_OWN_MASTER_PORT"
_OWN_PORT = "unset"


def init_process_group(info: WorldInfo, backend: str = "auto", timeout_s: float = 600) -> str:
    """Join the job's process group (a world of one included); returns the backend used.

    The timeout bounds every collective, so the survivors of a dead rank fail within ``timeout_s``
    instead of hanging until the scheduler kills them.
    """
    import datetime

    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_backend()
    if info.world_size == 1 and os.environ.get("MASTER_PORT", _OWN_PORT) == os.environ.get(_OWN_PORT_VAR, _OWN_PORT):
        # A world of one without a launcher still needs a rendezvous port: a fixed default would collide
        # with other jobs on the machine, so take a free one (and a new one at the next call). A port a
        # launcher exported is kept: torchrun's agent may host the store there.
        info = dataclasses.replace(info, master_addr="127.0.0.1", master_port=free_port())
        os.environ[_OWN_PORT_VAR] = str(info.master_port)
    export_torch_env(info)
    backend = resolve_backend(backend)
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    timeout = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group(backend=backend, init_method=f"tcp://{info.master_addr}:{info.master_port}",
                            rank=info.rank, world_size=info.world_size, timeout=timeout)
    # Groups created later without a timeout take torch's 30-minute default, and DeepSpeed creates its
    # gradient all-reduce group that way (a clone of the world group): a frozen rank would stall the others
    # for 30 minutes. Make the configured timeout the default for every group of this process.
    from ..compat.torch import set_default_group_timeout

    set_default_group_timeout(timeout)
    return backend


def teardown(barrier: bool = True) -> None:
    """Barrier, then destroy the group: without both, ranks sometimes abort at exit after finishing.

    After an error pass ``barrier=False``: the other ranks may be gone, and waiting for them would only
    turn a clear error into a timeout.
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    try:
        if barrier:
            dist.barrier()
    finally:
        ds_comm = sys.modules.get("deepspeed.comm")  # only where DeepSpeed is in use: never import it here
        if ds_comm is not None and ds_comm.is_initialized():
            # DeepSpeed caches its groups; its own destroy drops them, so a later job in this process
            # (a Ray Tune trial, a test) does not reach for a destroyed group.
            ds_comm.destroy_process_group()
        else:
            dist.destroy_process_group()


def comm_device():
    """Where a small host-side value must sit for a collective: NCCL reduces CUDA tensors only, gloo CPU ones."""
    import torch
    import torch.distributed as tdist

    if tdist.is_initialized() and tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")

