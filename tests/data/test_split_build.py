"""Shard builds split across tasks (`avpea submit shards build`, submitit's local cluster: real processes)
equal a one-task build byte for byte; a task killed mid-build and rerun rebuilds only its unfinished shards."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avpea_dist.data.parts import part_path, read_part
from tests.data.test_build import avpea

SYNTH = ["--clips", "12", "--seed", "4", "--size", "48", "--shard-size", "2"]


def _same_build(a: Path, b: Path) -> None:
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()
    m = json.loads((a / "manifest.json").read_text())
    files = [sh["file"] for s in m["splits"].values() for sh in s["shards"]]
    assert len(files) == 6 and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    index = ["index.json", *(f"index/{split}.npz" for split in m["splits"])]  # the readers' index too
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in index)


def _ranks(stdout: str) -> dict[int, dict[str, str]]:
    rows = [line.split(": ", 1) for line in stdout.splitlines() if line.startswith("rank ")]
    return {int(r[len("rank "):]): dict(kv.split("=", 1) for kv in rest.split(", ")) for r, rest in rows}


@pytest.fixture(scope="module")
def one_task(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("split")
    r = avpea("shards", "build", "synth", "--root", str(base / "data"), "--out", str(base / "one"), "--workers", "1",
              *SYNTH)
    assert r.returncode == 0, r.stderr
    return base / "data", base / "one"


@pytest.mark.slow
def test_two_tasks_equal_one_task(one_task, tmp_path: Path) -> None:
    """`synth` through two local tasks (each writes only the videos its shards need) equals `shards build synth`."""
    data, one = one_task
    out = tmp_path / "two"
    r = avpea("submit", "shards", "build", "synth", "--root", str(tmp_path / "data"), "--out", str(out),
              "--cluster", "local", "--tasks-per-node", "2", "--cpus-per-task", "1", *SYNTH)
    assert r.returncode == 0, r.stderr
    ranks = _ranks(r.stdout)
    assert sorted(ranks) == [0, 1] and [ranks[i]["shards"] for i in (0, 1)] == ["3", "3"]
    videos = [sorted(p.name for p in (d / "AVE").iterdir()) for d in (tmp_path / "data", data)]
    assert videos[0] == videos[1]
    m = json.loads((out / "manifest.json").read_text())
    assert m["source"] == str(tmp_path / "data")
    m["source"] = str(data)  # the one difference: where the videos were written
    (out / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    index = json.loads((out / "index.json").read_text())  # it carries the manifest's description, source too
    assert index["manifest"]["source"] == str(tmp_path / "data")
    index["manifest"]["source"] = str(data)
    (out / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    _same_build(out, one)


@pytest.mark.slow
def test_killed_task_rebuilds_only_its_unfinished_shards(one_task, tmp_path: Path) -> None:
    """`ave` on the same folder: task 1 of 2 killed (SIGKILL) after its first shard; the resubmitted job
    reuses that shard, builds the rest, and the result equals the one-task build."""
    data, one = one_task
    out = tmp_path / "killed"
    part = part_path(out, 1, 2)
    code = ("import sys; from avpea_dist.data.builder import BuildOptions; from avpea_dist.launch.shards_job import "
            "run_task; run_task('ave', sys.argv[2], BuildOptions(workers=1, shard_size=2), {'root': sys.argv[1]}, "
            "task=1, tasks=2)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(data), str(out)], start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (part.is_file() and read_part(part)["build"]["done"]):
            assert proc.poll() is None and time.monotonic() < deadline, "task 1 ended before its first shard"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(read_part(part)["build"]["done"]) == 1 and not (out / "manifest.json").exists()
    r = avpea("submit", "shards", "build", "ave", "--root", str(data), "--out", str(out), "--cluster", "local",
              "--tasks-per-node", "2", "--cpus-per-task", "1", "--shard-size", "2", "--wait")
    assert r.returncode == 0, r.stderr
    ranks = _ranks(r.stdout)
    assert (ranks[1]["reused_shards"], ranks[1]["built_shards"]) == ("1", "2")
    assert (ranks[0]["reused_shards"], ranks[0]["built_shards"]) == ("0", "3")
    _same_build(out, one)
    # A finished folder with a lost shard reads as unfinished while that shard is rebuilt, then complete again.
    from avpea_dist.data.builder import BuildOptions
    from avpea_dist.datasets.ave.build import BUILDER

    (out / "train-000001.tar").unlink()
    seen = []

    def look(records: list) -> None:
        seen.append(json.loads((out / "manifest.json").read_text())["complete"])

    result = BUILDER.build_task(out, BuildOptions(workers=1, shard_size=2), task=1, tasks=2, progress=False,
                                prepare=look, root=data)
    assert seen == [False] and result["stats"]["built_shards"] == 1 and result["manifest"]["complete"]
    _same_build(out, one)
