"""A shard build split across two Slurm nodes (n1, n2 on this machine; see slurmkit.py), one task on each,
equals a one-task build of the same input, byte for byte: manifest and every shard."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.distributed]

REPO = Path(__file__).resolve().parents[2]
SYNTH = ["--clips", "12", "--seed", "4", "--size", "48", "--shard-size", "2"]  # 6 shards: 3 for each task


def avpea(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avpea_dist.cli", *args], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=600)


def test_two_node_shard_build_equals_one_task_build(slurm_cluster, tmp_path):
    env = dict(slurm_cluster.env, OMP_NUM_THREADS="1")
    data, one, two = tmp_path / "data", tmp_path / "one", tmp_path / "two"
    r = avpea("shards", "build", "synth", "--root", str(data), "--out", str(one), "--workers", "1", *SYNTH, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    r = avpea("submit", "shards", "build", "synth", "--root", str(data), "--out", str(two), "--cluster", "slurm",
              "--nodes", "2", "--tasks-per-node", "1", "--cpus-per-task", "1", "--time", "00:10:00", *SYNTH,
              "--wait", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = re.search(r"submitted shards build synth job (\d+): 2 node\(s\) x 1 task\(s\) on slurm", r.stdout).group(1)
    for rank in (0, 1):  # task r ran on node r of the allocation n[1-2] and built every other shard
        assert f"node={rank}(2), global_rank={rank}(2)" in (two / "submitit" / f"{job_id}_{rank}_log.out").read_text()
        assert re.search(rf"^rank {rank}: status=finished, .*\bshards=3\b", r.stdout, re.M), r.stdout

    assert (two / "manifest.json").read_bytes() == (one / "manifest.json").read_bytes()
    manifest = json.loads((one / "manifest.json").read_text())
    files = [shard["file"] for split in manifest["splits"].values() for shard in split["shards"]]
    assert len(files) == 6 and all((two / f).read_bytes() == (one / f).read_bytes() for f in files)
    assert sorted(p.name for p in two.glob("*.tar")) == sorted(files)  # nothing beside the manifest's shards
