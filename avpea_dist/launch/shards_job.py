"""Shard builds split across tasks: ``avpea submit shards build ave|synth`` (Slurm or local, via submitit).

Every task computes the same plan from the annotation files, builds shards task, task + n, ... of it
(``build.build_task``) with its own decoding workers, and records them in its own part file. The last task
to finish (whichever first sees every shard recorded) merges the records into ``manifest.json``; the
submitting process merges again when it waits, which changes nothing when a task already did. The result
is byte-for-byte the manifest and shards of a one-task build. A killed or requeued task rerun redoes only
its unfinished shards.

``synth`` is the synthetic builder: it writes the AVE-layout folder (annotation files, and in each task only
the videos its own unfinished shards need), then builds it exactly as ``ave``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from ..runtime import startup
from .job import BoundedRequeue
from ..data.build import BuildOptions, build_task
from ..datasets.ave.synth import SynthSpec

DATASETS = ("ave", "synth")


@dataclass(frozen=True)
class SynthSource:
    """What ``shards synth`` would write: the synthetic dataset a ``synth`` build makes first."""

    clips: int = 480
    seed: int = 0
    classes: int = 8
    spec: SynthSpec = SynthSpec()

    def prepare(self, root: Path) -> Callable[[list[Any]], None]:
        """Write the annotation files now; -> the hook that writes the missing videos of the records a
        task is about to decode (videos are deterministic per clip, so any task can write any of them)."""
        from ..fileio import atomic_write_json
        from ..datasets.ave.synth import make_dataset

        marker, wanted = root / "synth.json", json.loads(json.dumps(asdict(self)))
        if marker.is_file() and json.loads(marker.read_text()) != wanted:
            raise ValueError(f"{root} holds a synthetic dataset made with other options ({marker}); "
                             f"choose a new --root or delete {root}")
        atomic_write_json(marker, wanted)  # every task writes the same bytes
        make_dataset(root, self.clips, self.seed, self.classes, self.spec, only=())

        def write_videos(records: list[Any]) -> None:
            need = {c.id for c in records if not (root / "AVE" / f"{c.id}.mp4").is_file()}
            if need:
                make_dataset(root, self.clips, self.seed, self.classes, self.spec, only=need)

        return write_videos


def run_task(dataset: str, root: str | Path, out: str | Path, opts: BuildOptions, *, task: int = 0,
             tasks: int = 1, run: str | None = None, synth: SynthSource | None = None,
             progress: bool = False) -> dict[str, Any]:
    """One build task of ``dataset`` ('ave', or 'synth' with ``synth``); -> build_task's result."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    root = Path(root)
    prepare = None
    if dataset == "synth":
        prepare = (synth or SynthSource()).prepare(root)
    return build_task(root, out, opts, task=task, tasks=tasks, run=run, progress=progress, prepare=prepare)


def merge(root: str | Path, out: str | Path, opts: BuildOptions, tasks: int) -> dict[str, Any] | None:
    """After a job of ``tasks`` tasks ended: merge their parts into ``manifest.json`` (as the last task
    does); None if a task did not finish."""
    from ..datasets.ave.release import read_ave
    from ..data.build import preprocessing
    from ..data.parts import merge_if_complete
    from ..data.plan import fingerprint, make_plan

    classes, splits = read_ave(root)
    plan = make_plan(splits, opts.shard_size, opts.order_seed)
    pre = preprocessing(opts)
    return merge_if_complete(Path(out), plan, tasks, None, classes=classes, preprocessing=pre,
                             source=str(Path(root).resolve()),
                             fingerprint=fingerprint(classes, plan, pre), splits=splits,
                             order_seed=opts.order_seed, shard_size=opts.shard_size)


class ShardBuildJob(BoundedRequeue):
    """One task of a split shard build, as a submitit callable: requeued after preemption, it resumes."""

    def __init__(self, dataset: str, root: str, out: str, opts: BuildOptions, synth: SynthSource | None,
                 max_requeues: int = 5) -> None:
        self.dataset, self.root, self.out, self.opts, self.synth = dataset, root, out, opts, synth
        self.max_requeues, self.requeues = max_requeues, 0

    def __call__(self) -> dict[str, Any]:
        import submitit

        startup.start_process(threads=False)  # decoding workers set their own threads
        env = submitit.JobEnvironment()
        result = run_task(self.dataset, self.root, self.out, self.opts, task=env.global_rank,
                          tasks=env.num_tasks, run=str(env.job_id), synth=self.synth)
        return {"status": "finished", "host": env.hostname, "merged": result["manifest"] is not None,
                **result["stats"]}


def synth_source(args: argparse.Namespace) -> SynthSource:
    spec = SynthSpec(size=args.size, fps=args.fps, sample_rate=args.sample_rate, channels=args.channels)
    return SynthSource(clips=args.clips, seed=args.seed, classes=args.classes, spec=spec)


def submit_build(args: argparse.Namespace) -> int:
    from .submission import dry_run, submit_job
    from .executor import JobSpec, make_executor
    from ..apps.shards import options_from, report

    workers = args.workers or args.cpus_per_task or 1
    opts = options_from(args, workers)
    root, out = Path(args.root).resolve(), Path(args.out).resolve()  # tasks may start elsewhere
    synth = synth_source(args) if args.dataset == "synth" else None
    spec = JobSpec(nodes=args.nodes, gpus_per_node=args.gpus_per_node, tasks_per_node=args.tasks_per_node,
                   cpus_per_task=args.cpus_per_task or workers, time=args.time, partition=args.partition,
                   account=args.account, qos=args.qos, constraint=args.constraint, mem=args.mem,
                   job_name=args.job_name or f"avpea-shards-{args.dataset}", signal_delay_s=args.signal_delay_s,
                   max_requeues=args.max_requeues, setup=tuple(args.setup))
    folder = out / "submitit"
    if args.dry_run:
        what = {"dataset": args.dataset, "root": str(root), "out": str(out), **asdict(opts)}
        return dry_run(spec, folder, args.cluster, "".join(f"{k}: {v}\n" for k, v in what.items()),
                       f"shard build, {spec.world_size} tasks")
    executor = make_executor(spec, folder, args.cluster)
    job = ShardBuildJob(args.dataset, str(root), str(out), opts, synth, spec.max_requeues)
    rc = submit_job(executor, job, spec, args, f"shards build {args.dataset}")
    if rc or not (args.wait or args.cluster == "local"):
        return rc
    manifest = merge(root, out, opts, spec.world_size)
    if manifest is None:
        print(f"avpea submit shards: error: shards of {out} are unfinished after the job; submit the same "
              f"command again to finish them", file=sys.stderr)
        return 1
    return report(manifest, str(out), args.strict)
