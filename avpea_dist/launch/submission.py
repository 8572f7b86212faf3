"""Submitting a job through submitit: the dry run (the sbatch script and what would run) and the submission
with its waiting, progress relay and result lines; shared by `avpea submit train|sweep|shards build`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def dry_run(spec: Any, folder: Path, cluster: str, resolved: str, what: str) -> int:
    from .executor import sbatch_script

    if cluster == "slurm":
        print(f"# sbatch script submitit writes to {folder}/<job id>_submission.sh\n")
        print(sbatch_script(spec, folder))
    else:
        print(f"# local job: {spec.ntasks_per_node} task(s) as processes on this machine, logs in {folder}\n")
    print(f"# resolved config ({what})\n")
    print(resolved, end="")
    return 0


def submit(executor: Any, fn: Any, spec: Any, args: argparse.Namespace, what: str) -> int:
    from submitit.core.utils import FailedJobError, UncompletedJobError

    try:
        job = executor.submit(fn)
    except FailedJobError as e:  # sbatch refused: no controller, a wrong partition or account ...
        reason = " | ".join(line.strip() for line in str(e).strip().splitlines()) or "(no message)"
        print(f"avpea submit {what}: error: {args.cluster} refused the job: {reason}\n"
              f"check the job options (e.g. --partition, --account) with --dry-run", file=sys.stderr)
        return 1
    print(f"submitted {what} job {job.job_id}: {spec.nodes} node(s) x {spec.ntasks_per_node} task(s) "
          f"on {args.cluster}; logs {job.paths.stdout.parent}", flush=True)
    if not (args.wait or args.cluster == "local"):
        return 0
    try:
        if args.cluster == "local":
            show_progress(job)
        results = job.results()
    except (FailedJobError, UncompletedJobError) as e:
        print(f"avpea submit {what}: job {job.job_id} failed; its logs are in {job.paths.stdout.parent}\n"
              f"{str(e)[-3000:]}", file=sys.stderr)
        return 1
    return print_results(results)


def show_progress(job: Any, interval_s: float = 1.0) -> None:
    """While a local job runs, relay rank 0's progress lines (steps, evaluations, stops) from its log."""
    import time

    offset = 0
    while True:
        done = job.done()
        path = job.paths.stdout
        if path.is_file():
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            for line in chunk.decode(errors="replace").splitlines():
                text = line.split("\r")[-1].strip()
                if text.startswith(("step ", "stopping at step")):
                    print(f"  rank 0: {text}", flush=True)
        if done:
            return
        time.sleep(interval_s)


def print_results(results: list[Any]) -> int:
    ok = True
    for rank, r in enumerate(results):
        if isinstance(r, dict):
            print(f"rank {rank}: " + ", ".join(f"{k}={v}" for k, v in r.items() if not isinstance(v, (dict, list))))
            ok &= r.get("status") == "finished"
    return 0 if ok else 1
