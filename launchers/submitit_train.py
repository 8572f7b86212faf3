#!/usr/bin/env python
"""Submit training from Python with submitit, the way `avpea submit train` does, to adapt in your own code.

    python launchers/submitit_train.py configs/avel_vitl.yaml train.steps=8000 \
        --nodes 2 --gpus-per-node 8 --partition gpu --time 12:00:00

Each task runs ``avpea_dist.launch.job.TrainJob``: it exports the distributed environment from Slurm
(submitit's TorchDistributedEnvironment, every GPU left visible), turns Slurm's USR2 into a stop request
at the next step, saves on every rank, and requeues from rank 0 (at most --max-requeues times).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from avpea_dist.config_load import load_config
from avpea_dist.launch.executor import JobSpec, make_executor
from avpea_dist.launch.job import TrainJob
from avpea_dist.launch.sweep import absolute_paths


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--cluster", choices=("slurm", "local"), default="slurm")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=0)
    p.add_argument("--tasks-per-node", type=int, default=0)
    p.add_argument("--cpus-per-task", type=int, default=8)
    p.add_argument("--time", default="24:00:00")
    p.add_argument("--partition")
    p.add_argument("--max-requeues", type=int, default=5)
    args = p.parse_args()

    cfg = absolute_paths(load_config(args.config, args.overrides))  # tasks may start elsewhere
    spec = JobSpec(nodes=args.nodes, gpus_per_node=args.gpus_per_node, tasks_per_node=args.tasks_per_node,
                   cpus_per_task=args.cpus_per_task, time=args.time, partition=args.partition,
                   max_requeues=args.max_requeues, job_name=f"avpea-train-{Path(args.config).stem}")
    executor = make_executor(spec, Path(cfg["train"]["out"]) / "submitit", args.cluster)
    job = executor.submit(TrainJob(cfg, spec.max_requeues))
    print(f"submitted job {job.job_id}; logs in {job.paths.stdout.parent}", flush=True)
    if args.cluster == "local":  # the tasks are this machine's processes: wait for them
        for rank, result in enumerate(job.results()):
            print(f"rank {rank}: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
