"""A Ray cluster inside one submitit job: the first node runs the head and the sweep, the others join.

One task per node. Task 0 starts ``ray start --head`` (a short temp dir: Ray's AF_UNIX socket paths must
stay under 107 bytes), publishes its address in the job folder, runs the sweep as the driver, then
writes ``done`` and stops Ray. The other tasks wait for the address, join with their node's CPUs and
GPUs, and leave when ``done`` appears. A requeued job reruns the sweep under the same name, which
continues it (``Tuner.restore``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import submitit

from ..io import atomic_write_text
from .. import runtime
from .job import BoundedRequeue
from .sweep import SweepSpec, run_sweep

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 900


def _ray_cli() -> str:
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise FileNotFoundError("the `ray` command is not installed beside this python; pip install 'ray[tune]'")
    return found


def _node_resources() -> list[str]:
    import torch

    cpus = int(os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE") or os.cpu_count())
    return [f"--num-cpus={cpus}", f"--num-gpus={torch.cuda.device_count()}"]


def _wait_for(path: Path, timeout_s: float, what: str) -> str:
    deadline = time.time() + timeout_s
    while not path.is_file():
        if time.time() > deadline:
            raise TimeoutError(f"no {what} after {timeout_s:.0f} s ({path}); see the head task's log")
        time.sleep(2)
    return path.read_text().strip()


class SweepJob(BoundedRequeue):
    def __init__(self, cfg: dict[str, Any], spec: SweepSpec, max_requeues: int = 5) -> None:
        self.cfg = cfg
        self.spec = spec
        self.max_requeues = max_requeues
        self.requeues = 0

    def __call__(self) -> dict[str, Any] | None:
        from ..config import config_from_dict

        runtime.setup_logging()
        env = submitit.JobEnvironment()
        rendezvous = self.spec.folder / "ray_cluster" / env.job_id
        address_file, done_file = rendezvous / "head_address", rendezvous / "done"
        ray = _ray_cli()
        if env.global_rank != 0:
            address = _wait_for(address_file, JOIN_TIMEOUT_S, "Ray head address")
            subprocess.run([ray, "start", f"--address={address}", *_node_resources()], check=True)
            try:
                _wait_for(done_file, float("inf"), "end of sweep")
            finally:
                subprocess.run([ray, "stop"], check=False)
            return None
        port = runtime.rendezvous_port(env.raw_job_id, 6379)
        address = f"{env.hostnames[0]}:{port}"
        # Short and per job: two jobs on one node must not share a session folder.
        temp_dir = f"/tmp/ray_{env.raw_job_id}"
        subprocess.run([ray, "start", "--head", f"--port={port}", f"--temp-dir={temp_dir}",
                        "--include-dashboard=false", "--disable-usage-stats", *_node_resources()], check=True)
        try:
            atomic_write_text(address_file, address + "\n")
            log.info("Ray head at %s (%d node(s)); sweep %s", address, env.num_nodes, self.spec.name)
            out = run_sweep(config_from_dict(self.cfg), self.spec, address=address)
        finally:
            atomic_write_text(done_file, "done\n")
            subprocess.run([ray, "stop"], check=False)
        return {"status": "finished", "folder": str(out["folder"]), "rows": out["rows"]}
