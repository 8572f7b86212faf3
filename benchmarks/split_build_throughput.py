"""Split shard-build throughput: clips/s per task with 1 and 2 tasks of `avpea submit shards build ave`.

Writes AVE-layout clips shaped like a real download (H.264 480x480, 25 fps, AAC 44.1 kHz stereo, 10 s),
then builds them with ``--cluster local --tasks-per-node T --cpus-per-task 1`` (one decoding worker per
task) for each T, in a fresh process each, and reads every task's own rate from the job's result lines.
The record goes to ``benchmarks/results/data_split_build.json``; the machine and its load are in it.

    python benchmarks/split_build_throughput.py --clips 16
    python benchmarks/split_build_throughput.py --clips 16 --cluster slurm   # 1 and 2 nodes, one task each
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from build_throughput import RESULTS, machine


def build(root: Path, out: Path, tasks: int, cluster: str = "local") -> dict:
    # On Slurm one task per node (--nodes T), as a multi-node build runs; locally T tasks on this machine.
    layout = ["--nodes", str(tasks), "--tasks-per-node", "1", "--wait"] if cluster == "slurm" else [
        "--tasks-per-node", str(tasks)]
    cmd = [sys.executable, "-m", "avpea_dist.cli", "submit", "shards", "build", "ave", "--root", str(root),
           "--out", str(out), "--cluster", cluster, *layout, "--cpus-per-task", "1", "--shard-size", "4"]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    rates = [float(x) for x in re.findall(r"clips_per_s=([0-9.]+)", r.stdout)]
    clips = [int(x) for x in re.findall(r"clips_processed=(\d+)", r.stdout)]
    return {"tasks": tasks, "clips_per_s_per_task": rates, "clips_per_task": clips, "wall_s": wall,
            "clips_per_s_total_wall": sum(clips) / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--tasks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--work", default=None,
                    help="scratch folder (default: a temp folder; on Slurm, one that every node sees)")
    ap.add_argument("--cluster", choices=("local", "slurm"), default="local",
                    help="slurm: each build a job of T nodes x 1 task on the cluster SLURM_CONF names")
    args = ap.parse_args()

    from avpea_dist.datasets.ave.synth import SynthSpec, make_dataset

    spec = SynthSpec(size=480, fps=25, sample_rate=44100, channels=2)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        root = Path(tmp) / "ave"
        make_dataset(root, args.clips, seed=0, spec=spec)
        runs = [build(root, Path(tmp) / f"out{t}", t, args.cluster) for t in args.tasks]
    record = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
              "cluster": args.cluster, "clips": args.clips,
              "input": f"H.264 {spec.size}x{spec.size} {spec.fps} fps + AAC {spec.sample_rate} Hz "
                       f"{spec.channels} ch, 10 s", "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    from avpea_dist.fileio import atomic_write_json

    name = "data_split_build.json" if args.cluster == "local" else f"data_split_build_{args.cluster}.json"
    atomic_write_json(RESULTS / name, record)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
