"""Shard builds split across tasks: ``avpea submit shards build <dataset>`` (Slurm or local, via submitit).

Every task computes the same plan from the release, builds shards task, task + n, ... of it
(``DatasetBuilder.build_task``) with its own decoding workers, and records them in its own part file. The last
task to finish (whichever first sees every shard recorded) merges the records into ``manifest.json``; the
submitting process merges again when it waits, which changes nothing when a task already did. The result is
byte-for-byte the manifest and shards of a one-task build. A killed or requeued task rerun redoes only its
unfinished shards.

A synthetic build (a source's ``build_alias``, e.g. ``synth``) first writes the raw release layout: each task
writes what every task needs and then only the videos its own unfinished shards need (``SynthSource.lazy``).

Before anything is submitted, the submitting process reads the release as every task will (``check_source``):
a wrong or missing source folder is one line here, not a traceback in each task's log after the queue.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import plugins
from ..data.builder import BuildOptions
from ..runtime import startup
from .job import BoundedRequeue

SynthOptions = tuple[dict[str, Any], str]
"""(the source's ``make`` options, the folder it writes to)."""


def run_task(dataset: str, out: str | Path, opts: BuildOptions, source: dict[str, Any], *, task: int = 0,
             tasks: int = 1, run: str | None = None, synth: SynthOptions | None = None,
             progress: bool = False) -> dict[str, Any]:
    """One build task of ``dataset`` (from ``source``, or from the synthetic set ``synth`` describes, written
    first); -> ``DatasetBuilder.build_task``'s result."""
    spec = plugins.dataset_spec(dataset)
    builder = plugins.load(spec.builder)
    prepare = None
    if synth is not None:
        options, root = synth
        source_gen = plugins.load(spec.synth)
        prepare = source_gen.lazy(Path(root), **options)
        if prepare is None:
            source_gen.make(Path(root), **options)
    return builder.build_task(out, opts, task=task, tasks=tasks, run=run, progress=progress, prepare=prepare,
                              **source)


def check_source(dataset: str, out: str | Path, opts: BuildOptions, source: dict[str, Any]) -> None:
    """Every source path of ``dataset``'s build (``--root``, ``--json-dir``, ``--videos``...) exists, and its
    release reads (annotation files, split lists): what each task does first, done once before submitting.
    Raises one line naming the option and the fix (FileNotFoundError, or the reader's ValueError)."""
    for key, value in source.items():
        if isinstance(value, Path) and not value.exists():
            option = "--" + key.replace("_", "-")
            raise FileNotFoundError(f"{option} {value} does not exist (checked before submitting); pass the "
                                    f"dataset's folder as `avpea shards build {dataset} --help` describes it")
    builder = plugins.load(plugins.dataset_spec(dataset).builder)
    builder.release(Path(out), opts, **source)


class ShardBuildJob(BoundedRequeue):
    """One task of a split shard build, as a submitit callable: requeued after preemption, it resumes."""

    def __init__(self, dataset: str, out: str, opts: BuildOptions, source: dict[str, Any],
                 synth: SynthOptions | None, max_requeues: int = 5) -> None:
        self.dataset, self.out, self.opts, self.source, self.synth = dataset, out, opts, source, synth
        self.max_requeues, self.requeues = max_requeues, 0

    def __call__(self) -> dict[str, Any]:
        import submitit

        startup.start_process(threads=False)  # decoding workers set their own threads
        env = submitit.JobEnvironment()
        result = run_task(self.dataset, self.out, self.opts, self.source, task=env.global_rank,
                          tasks=env.num_tasks, run=str(env.job_id), synth=self.synth)
        return {"status": "finished", "host": env.hostname, "merged": result["manifest"] is not None,
                **result["stats"]}


def submit_build(args: argparse.Namespace, dataset: str, opts: BuildOptions, source: dict[str, Any],
                 synth: SynthOptions | None, what: str) -> tuple[dict[str, Any] | None, int]:
    """Submit (or dry-run) the split build of ``args`` (the job options of ``launch.commands``); -> (the merged
    manifest when the job ran to the end here, else None; the exit code)."""
    from .executor import JobSpec, make_executor
    from .submission import dry_run, submit_job

    out = Path(args.out).resolve()  # tasks may start elsewhere
    if synth is None:  # a synthetic set is written by the job itself
        check_source(dataset, out, opts, source)
    spec = JobSpec(nodes=args.nodes, gpus_per_node=args.gpus_per_node, tasks_per_node=args.tasks_per_node,
                   cpus_per_task=args.cpus_per_task or opts.workers, time=args.time, partition=args.partition,
                   account=args.account, qos=args.qos, constraint=args.constraint, mem=args.mem,
                   job_name=args.job_name or f"avpea-shards-{dataset}", signal_delay_s=args.signal_delay_s,
                   max_requeues=args.max_requeues, setup=tuple(args.setup))
    folder = out / "submitit"
    if args.dry_run:
        shown = {"dataset": dataset, **({"root": synth[1]} if synth else {}), **{k: str(v) for k, v in source.items()},
                 "out": str(out), **asdict(opts)}
        return None, dry_run(spec, folder, args.cluster, "".join(f"{k}: {v}\n" for k, v in shown.items()),
                             f"shard build, {spec.world_size} tasks")
    executor = make_executor(spec, folder, args.cluster)
    job = ShardBuildJob(dataset, str(out), opts, source, synth, spec.max_requeues)
    rc = submit_job(executor, job, spec, args, what)
    if rc or not (args.wait or args.cluster == "local"):
        return None, rc
    builder = plugins.load(plugins.dataset_spec(dataset).builder)
    manifest = builder.merge(out, opts, spec.world_size, **source)
    if manifest is None:
        print(f"avpea submit shards: error: shards of {out} are unfinished after the job; submit the same "
              f"command again to finish them", file=sys.stderr)
        return None, 1
    return manifest, 0
