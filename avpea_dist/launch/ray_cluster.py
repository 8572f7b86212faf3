"""A Ray cluster inside one submitit job: the first node runs the head and the sweep, the others join.

One task per node. Task 0 starts ``ray start --head`` (a short temp dir: Ray's AF_UNIX socket paths must
stay under 107 bytes), publishes its address in the job folder, runs the sweep as the driver, then
writes ``done`` and stops its Ray node. The other tasks wait for the address, join with their node's CPUs
and GPUs, and leave when ``done`` appears. A requeued job reruns the sweep under the same name, which
continues it (``Tuner.restore``).

Each task runs its Ray node as a child, ``ray start --block`` in a process group of its own, and ends it
by ending that child (which stops its node's processes) and then that group: this node's processes, and
only those. ``ray stop`` would stop every Ray instance on the machine, another job's on a shared node
included. A node lost mid-sweep takes its trials with it;
Ray marks it dead, and Tune retries each of its trials elsewhere from the trial's last checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import submitit

from ..fileio import atomic_write_text
from ..runtime import startup
from .job import BoundedRequeue
from .sweep import SweepSpec, run_sweep

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 900
START_TIMEOUT_S = 300


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


def _start_node(args: list[str], log_path: Path) -> subprocess.Popen:
    """``ray start ARGS --block`` as a child process, once its node is up (its output goes to ``log_path``)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # Its own process group: Ray's agents outlive a raylet that died first, and are found by group.
        proc = subprocess.Popen([*args, "--block"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + START_TIMEOUT_S
    while "Ray runtime started" not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.time() > deadline:
            _stop_node(proc)
            raise RuntimeError(f"`{' '.join(args)}` did not start a Ray node (exit code {proc.returncode}); "
                               f"see {log_path}")
        time.sleep(0.5)
    return proc


def _stop_node(proc: subprocess.Popen) -> None:
    """End ``ray start --block`` (it stops its node's processes), then whatever of its group is left."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # nothing left
        pass


class SweepJob(BoundedRequeue):
    def __init__(self, cfg: dict[str, Any], spec: SweepSpec, max_requeues: int = 5) -> None:
        self.cfg = cfg
        self.spec = spec
        self.max_requeues = max_requeues
        self.requeues = 0

    def __call__(self) -> dict[str, Any] | None:
        from ..config_load import config_from_dict

        startup.setup_logging()
        env = submitit.JobEnvironment()
        rendezvous = self.spec.folder / "ray_cluster" / env.job_id
        address_file, done_file = rendezvous / "head_address", rendezvous / "done"
        ray = _ray_cli()
        if env.global_rank != 0:
            address = _wait_for(address_file, JOIN_TIMEOUT_S, "Ray head address")
            node = _start_node([ray, "start", f"--address={address}", *_node_resources()],
                               rendezvous / f"ray_node_{env.global_rank}.log")
            try:
                _wait_for(done_file, float("inf"), "end of sweep")
            finally:
                _stop_node(node)
            return None
        port = startup.rendezvous_port(env.raw_job_id, 6379)
        address = f"{env.hostnames[0]}:{port}"
        # Short and per job: two jobs on one node must not share a session folder.
        temp_dir = f"/tmp/ray_{env.raw_job_id}"
        head = _start_node([ray, "start", "--head", f"--port={port}", f"--temp-dir={temp_dir}",
                            "--include-dashboard=false", "--disable-usage-stats", *_node_resources()],
                           rendezvous / "ray_node_0.log")
        try:
            atomic_write_text(address_file, address + "\n")
            log.info("Ray head at %s (%d node(s)); sweep %s", address, env.num_nodes, self.spec.name)
            out = run_sweep(config_from_dict(self.cfg), self.spec, address=address)
        finally:
            atomic_write_text(done_file, "done\n")
            _stop_node(head)
        return {"status": "finished", "folder": str(out["folder"]), "rows": out["rows"]}
