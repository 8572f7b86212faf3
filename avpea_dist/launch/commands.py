"""`avpea submit train|sweep` (a job through submitit: Slurm or this machine) and `avpea sweep` (Ray Tune).

Light at import: submitit, ray and torch load inside the handlers.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..extras import require
from .submission import dry_run, submit_job


def register(sub: argparse._SubParsersAction) -> None:
    submit = sub.add_parser("submit", help="run training or a sweep as a Slurm job (or locally) through submitit")
    what = submit.add_subparsers(dest="what", metavar="WHAT", required=True)

    p = what.add_parser("train", help="one multi-node training job, one task per GPU")
    _config_args(p)
    _job_args(p)
    p.set_defaults(func=submit_train)

    p = what.add_parser("sweep", help="a Ray cluster inside one Slurm job (first node the head) running a sweep")
    _config_args(p)
    _job_args(p)
    _sweep_args(p)
    p.set_defaults(func=submit_sweep)

    from ..apps.shards import register_submit  # `submit shards build`: the data area owns it

    register_submit(what, _job_args)

    p = sub.add_parser("sweep", help="Ray Tune sweep of adapter bottleneck sizes (and more axes)")
    _config_args(p)
    _sweep_args(p)
    p.add_argument("--address", default=None, help="Ray cluster to join (default: start one on this machine)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the Ray instance started here")
    p.set_defaults(func=sweep)


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config, e.g. configs/avel_vitl.yaml")
    p.add_argument("overrides", nargs="*", default=[], help="dotted overrides such as train.steps=2000")


def _job_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("job")
    g.add_argument("--cluster", choices=("slurm", "local"), default="slurm",
                   help="slurm (sbatch) or local (tasks as processes on this machine)")
    g.add_argument("--nodes", type=int, default=1)
    g.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node; one task per GPU")
    g.add_argument("--tasks-per-node", type=int, default=0, help="tasks per node without GPUs (CPU runs)")
    g.add_argument("--cpus-per-task", type=int, default=0, help="default: data.num_workers + 1")
    g.add_argument("--time", default="24:00:00", help="time limit, HH:MM:SS or D-HH:MM:SS")
    g.add_argument("--partition")
    g.add_argument("--account")
    g.add_argument("--qos")
    g.add_argument("--constraint")
    g.add_argument("--mem", help="memory per node, e.g. 256G (0: all of it)")
    g.add_argument("--job-name", default=None, help="default: avpea-<config name>")
    g.add_argument("--setup", action="append", default=[], metavar="CMD",
                   help="shell line run before the tasks start (repeatable), e.g. 'module load cuda'")
    g.add_argument("--signal-delay-s", type=int, default=120, help="seconds before the time limit Slurm signals")
    g.add_argument("--max-requeues", type=int, default=5, help="requeues after preemption or time limit")
    g.add_argument("--wait", action="store_true", help="wait for the job and print its result (always for local)")
    g.add_argument("--dry-run", action="store_true", help="print the sbatch script and resolved config; submit nothing")


def _sweep_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sweep")
    g.add_argument("--bottleneck", help="comma-separated adapter bottleneck sizes, e.g. 16,32,64,128,256")
    g.add_argument("--lr-adapter", help="comma-separated adapter learning rates")
    g.add_argument("--lr-head", help="comma-separated head learning rates")
    g.add_argument("--axis", action="append", default=[], metavar="KEY=V1,V2",
                   help="any other config key to sweep, e.g. --axis optim.weight_decay=0,0.01 (repeatable)")
    g.add_argument("--seeds", default=None, metavar="S1,S2",
                   help="train every point once per seed (train.seed), e.g. --seeds 0,1,2; the table and plot "
                   "show mean ± std and n per point")
    g.add_argument("--scheduler", choices=("asha", "fifo"), default=None,
                   help="asha stops weak trials early; fifo runs every trial to the end (default: asha, or fifo "
                   "with --seeds, so that every seed of a point trains as long)")
    g.add_argument("--gpus-per-trial", type=int, default=0, help="GPUs per trial (0: CPU)")
    g.add_argument("--workers-per-trial", type=int, default=0,
                   help="ranks per trial on CPU (Ray Train when > 1; default: one per GPU, or 1)")
    g.add_argument("--cpus-per-trial", type=int, default=1, help="CPUs per rank of a trial")
    g.add_argument("--max-concurrent", type=int, default=0, help="trials at once (0: as resources allow)")
    g.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial, from its checkpoint")
    g.add_argument("--name", default=None, help="sweep name; rerun with the same name to continue (default: "
                   "<config>_<axes>)")
    g.add_argument("--root", default="runs/sweeps", help="folder holding sweeps")


def _load(args: argparse.Namespace) -> Any:
    from ..config_load import load_config

    return load_config(args.config, args.overrides)


def _sweep_spec(args: argparse.Namespace) -> Any:
    from ..config import Config
    from ..config_load import valid_keys
    from .sweep import SweepSpec, parse_values

    axes: dict[str, list] = {}
    for flag, key in (("--bottleneck", "model.bottleneck"), ("--lr-adapter", "optim.lr_adapter"),
                      ("--lr-head", "optim.lr_head")):
        text = getattr(args, flag[2:].replace("-", "_"))
        if text is not None:
            axes[key] = parse_values(flag, text)
    valid = valid_keys(Config)
    for text in args.axis:
        key, sep, values = text.partition("=")
        if not sep or key not in valid:
            raise ValueError(f"--axis {text!r}: write KEY=V1,V2 with KEY a config key such as optim.weight_decay")
        if key in axes:
            raise ValueError(f"--axis {text!r}: {key} is already swept")
        axes[key] = parse_values(f"--axis {key}", values)
    if args.seeds is not None:
        from .sweep_seeds import SEED_KEY, parse_seeds

        if SEED_KEY in axes:
            raise ValueError(f"--seeds and --axis {SEED_KEY}=... both set the seeds; give --seeds only")
        axes[SEED_KEY] = parse_seeds(args.seeds)  # last: a point's seeds are neighbours in the grid
    scheduler = args.scheduler or ("fifo" if args.seeds is not None else "asha")
    name = args.name or "_".join([Path(args.config).stem, *(k.rsplit(".", 1)[-1] for k in axes)])
    return SweepSpec(axes=axes, name=name, root=args.root, scheduler=scheduler,
                     gpus_per_trial=args.gpus_per_trial, workers_per_trial=args.workers_per_trial,
                     cpus_per_trial=args.cpus_per_trial,
                     max_concurrent=args.max_concurrent, max_failures=args.max_failures)


def sweep(args: argparse.Namespace) -> int:
    require("sweep", "avpea sweep")
    from .sweep import run_sweep
    from .sweep_report import by_point, markdown, markdown_by_point
    from .sweep_seeds import SEED_KEY

    cfg = _load(args)
    spec = _sweep_spec(args)
    out = run_sweep(cfg, spec, address=args.address, num_cpus=args.num_cpus)
    print(markdown(out["rows"]), end="")
    if SEED_KEY in spec.axes:
        print("\nper point, over seeds (mean ± std of the finished seeds):")
        print(markdown_by_point(by_point(out["rows"], [a.rsplit(".", 1)[-1] for a in spec.axes])), end="")
    for kind, path in out["files"].items():
        print(f"{kind:<4} {path}")
    return 0 if all(r["status"] in ("finished", "stopped early") for r in out["rows"]) else 1


def _job_spec(args: argparse.Namespace, cfg: Any, kind: str) -> Any:
    from .executor import JobSpec

    if kind == "train" and args.gpus_per_node and args.tasks_per_node not in (0, args.gpus_per_node):
        raise ValueError(f"--tasks-per-node {args.tasks_per_node} with --gpus-per-node {args.gpus_per_node}: "
                         f"training runs one task per GPU; leave --tasks-per-node out")
    if kind == "sweep" and args.tasks_per_node not in (0, 1):
        raise ValueError("--tasks-per-node: a Ray cluster runs one task per node (Ray places the trials)")
    tasks = 1 if kind == "sweep" else args.tasks_per_node
    # A training task is one rank and its loader workers; a sweep task is a whole Ray node, one rank per GPU.
    cpus = (cfg.data.num_workers + 1) * (max(1, args.gpus_per_node) if kind == "sweep" else 1)
    return JobSpec(nodes=args.nodes, gpus_per_node=args.gpus_per_node, tasks_per_node=tasks,
                   cpus_per_task=args.cpus_per_task or cpus, time=args.time,
                   partition=args.partition, account=args.account, qos=args.qos, constraint=args.constraint,
                   mem=args.mem, job_name=args.job_name or f"avpea-{kind}-{Path(args.config).stem}",
                   signal_delay_s=args.signal_delay_s, max_requeues=args.max_requeues, setup=tuple(args.setup))


def submit_train(args: argparse.Namespace) -> int:
    from ..config_load import config_from_dict, dump_yaml
    from .executor import make_executor
    from .sweep import absolute_paths

    cfg = _load(args)
    data = absolute_paths(cfg)  # tasks may start in another folder (and on other nodes)
    spec = _job_spec(args, cfg, "train")
    folder = Path(data["train"]["out"]) / "submitit"
    if args.dry_run:
        return dry_run(spec, folder, args.cluster, dump_yaml(config_from_dict(data)), f"{spec.world_size} ranks")
    from .job import TrainJob

    executor = make_executor(spec, folder, args.cluster)
    return submit_job(executor, TrainJob(data, spec.max_requeues), spec, args, "train")


def submit_sweep(args: argparse.Namespace) -> int:
    require("sweep", "avpea submit sweep")  # here, not on the cluster after the job waited in the queue
    from ..config_load import dump_yaml
    from .executor import make_executor

    cfg = _load(args)
    sweep_spec = _sweep_spec(args)
    spec = _job_spec(args, cfg, "sweep")
    folder = sweep_spec.folder / "submitit"
    if args.dry_run:
        return dry_run(spec, folder, args.cluster, dump_yaml(cfg), f"base of every trial; {spec.nodes} Ray "
                        f"node(s), sweep {sweep_spec.name} over {sweep_spec.axes}")
    from .ray_cluster import SweepJob

    executor = make_executor(spec, folder, args.cluster)
    return submit_job(executor, SweepJob(cfg.to_dict(), sweep_spec, spec.max_requeues), spec, args, "sweep")
