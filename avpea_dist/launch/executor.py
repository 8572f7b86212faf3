"""What a job asks of the cluster, and the submitit executors and sbatch text that carry it.

One ``JobSpec`` drives both the real submission (submitit's AutoExecutor, ``cluster='slurm'`` or
``'local'``) and ``--dry-run``, which renders the very sbatch script submitit would write, with
submitit's own generator, so what a user reads is what Slurm gets.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLUSTERS = ("slurm", "local")


def node_name() -> str:
    """The Slurm node this process runs on (several nodes may share one host, as in the tests), else the host."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def parse_time(text: str) -> int:
    """Slurm time limit ``[D-]HH:MM:SS`` or whole minutes -> minutes (seconds round up)."""
    text = str(text).strip()
    if text.isdigit():
        return int(text)
    m = re.fullmatch(r"(?:(\d+)-)?(\d{1,2}):(\d{2}):(\d{2})", text)
    if not m or int(m.group(3)) >= 60 or int(m.group(4)) >= 60:
        raise ValueError(f"--time {text!r} is not a Slurm time limit; write HH:MM:SS, D-HH:MM:SS or whole "
                         f"minutes (e.g. --time 04:00:00)")
    days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
    return (days * 24 + hours) * 60 + minutes + math.ceil(seconds / 60)


@dataclass(frozen=True)
class JobSpec:
    """Resources of one job: ``nodes`` x ``tasks_per_node`` ranks, one task per GPU when there are GPUs."""

    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int = 0
    """0: one task per GPU, or one task per node without GPUs."""
    cpus_per_task: int = 4
    time: str = "24:00:00"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    mem: str | None = None
    """Memory per node as Slurm writes it: '64G', '500000M', or '0' for all of it."""
    job_name: str = "avpea"
    signal_delay_s: int = 120
    """Slurm sends the preemption signal this long before the time limit: time to reach a step and save."""
    max_requeues: int = 5
    """Times a preempted or timed-out job is requeued before it stops for good."""
    setup: tuple[str, ...] = field(default_factory=tuple)
    """Shell lines run before srun (module load, conda activate ...)."""

    def __post_init__(self) -> None:
        for flag, value, low in (("--nodes", self.nodes, 1), ("--gpus-per-node", self.gpus_per_node, 0),
                                 ("--tasks-per-node", self.tasks_per_node, 0),
                                 ("--cpus-per-task", self.cpus_per_task, 1),
                                 ("--signal-delay-s", self.signal_delay_s, 1),
                                 ("--max-requeues", self.max_requeues, 0)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{flag} must be an integer >= {low}, got {value!r}")
        minutes = parse_time(self.time)
        if minutes * 60 <= self.signal_delay_s + 60:
            raise ValueError(f"--time {self.time} leaves no room before the preemption signal sent "
                             f"{self.signal_delay_s} s ahead of it; ask for more time or a smaller --signal-delay-s")
        if self.mem is not None and not re.fullmatch(r"\d+[KMGT]?", self.mem):
            raise ValueError(f"--mem {self.mem!r} is not Slurm memory; write e.g. 64G, 500000M or 0 (all)")
        if not re.fullmatch(r"[\w.+-]+", self.job_name):
            raise ValueError(f"job name {self.job_name!r} may hold only letters, digits and . _ + -")

    @property
    def ntasks_per_node(self) -> int:
        return self.tasks_per_node or self.gpus_per_node or 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.ntasks_per_node

    @property
    def time_min(self) -> int:
        return parse_time(self.time)


def slurm_parameters(spec: JobSpec) -> dict[str, Any]:
    """Native sbatch parameters, named as submitit's Slurm executor names them."""
    params: dict[str, Any] = {
        "job_name": spec.job_name,
        "time": spec.time_min,
        "nodes": spec.nodes,
        "ntasks_per_node": spec.ntasks_per_node,
        "cpus_per_task": spec.cpus_per_task,
        "signal_delay_s": spec.signal_delay_s,
        # Each rank runs `cpus_per_task` CPUs; without this, torch starts one thread per core per rank.
        "setup": [*spec.setup, f"export OMP_NUM_THREADS={spec.cpus_per_task}"],
        "additional_parameters": {"requeue": True},
    }
    if spec.gpus_per_node:
        params["gpus_per_node"] = spec.gpus_per_node
    for key in ("partition", "account", "qos", "constraint", "mem"):
        if getattr(spec, key) is not None:
            params[key] = getattr(spec, key)
    return params


def submitit_command(folder: str | Path) -> str:
    """The command every task runs: submitit's loader of the pickled job."""
    from ..compat.submitit import job_command

    return job_command(shlex.quote(sys.executable), Path(folder).expanduser().absolute())


def sbatch_script(spec: JobSpec, folder: str | Path) -> str:
    """The sbatch file submitit writes for ``spec`` (rendered without Slurm, for dry runs and tests)."""
    from ..compat.submitit import sbatch_text

    folder = Path(folder).expanduser().absolute()
    return sbatch_text(submitit_command(folder), folder, **slurm_parameters(spec))


def make_executor(spec: JobSpec, folder: str | Path, cluster: str) -> Any:
    """A submitit AutoExecutor for ``cluster`` ('slurm' or 'local'), named explicitly: AutoExecutor would
    otherwise switch to Slurm silently wherever `srun` is on PATH."""
    import submitit

    if cluster not in CLUSTERS:
        raise ValueError(f"--cluster {cluster!r} is unknown; choose one of {', '.join(CLUSTERS)}")
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise FileNotFoundError("sbatch is not on PATH: submit from a Slurm login node, run on this machine "
                                "with --cluster local, or see the script with --dry-run")
    if cluster == "local" and spec.nodes != 1:
        raise ValueError(f"--cluster local runs on this machine only: use --nodes 1 (got --nodes {spec.nodes})")
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster,
                                     **{f"{cluster}_max_num_timeout": spec.max_requeues})
    if cluster == "slurm":
        executor.update_parameters(**{f"slurm_{k}": v for k, v in slurm_parameters(spec).items()})
    else:
        executor.update_parameters(name=spec.job_name, timeout_min=spec.time_min, nodes=1,
                                   tasks_per_node=spec.ntasks_per_node, gpus_per_node=spec.gpus_per_node,
                                   cpus_per_task=spec.cpus_per_task)
    return executor
