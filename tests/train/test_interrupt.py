"""Ctrl-C and a dying launcher under real torchrun with 2 ranks (gloo, real shards).

Ctrl-C reaches torchrun and both ranks at once (one process group, as a terminal sends it): every rank
saves the same step and exits 3; the terminal shows rank 0's one stop line and no rank traceback. When
torchrun itself is SIGKILLed, both ranks save and leave within seconds instead of training on as orphans.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainkit import REPO, TINY, free_port

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def _start(shards: Path, out: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(free_port()), "-m", "avpea_dist.train.entry", TINY, f"data.shards={shards}", f"train.out={out}",
           "model.img_size=32", "data.batch_size=2", "data.num_workers=0", "train.steps=100000",
           "train.eval_every=100000", "train.ckpt_every=100000", "train.log_every=1", "train.progress=false",
           "dist.timeout_s=60"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": REPO}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait_for_steps(out: Path, proc: subprocess.Popen, steps: int = 2, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = out / "metrics.jsonl"
        if path.is_file() and sum('"split": "train"' in line for line in path.read_text().splitlines()) >= steps:
            return
        assert proc.poll() is None, "torchrun ended before training"
        time.sleep(0.5)
    raise AssertionError("no training steps in time")


def _ranks(torchrun_pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(torchrun_pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.is_file() and stat.read_text().split(")")[-1].split()[0] != "Z"


def _saved_step(out: Path) -> int:
    return json.loads((out / "result.json").read_text())["step"]


def test_ctrl_c_saves_the_same_step_on_every_rank_and_exits_3(synth_shards, tmp_path):
    out, log = tmp_path / "run", tmp_path / "torchrun.log"
    proc = _start(synth_shards, out, log)
    try:
        _wait_for_steps(out, proc)
        ranks = _ranks(proc.pid)
        assert len(ranks) == 2
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text(errors="replace")
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "preempted"
    step = result["step"]
    tags = sorted(p.name for p in (out / "checkpoints").glob("step_*"))
    assert tags == [f"step_{step:08d}"] and (out / "checkpoints" / tags[0] / "manifest.json").is_file()
    # Both ranks wrote their state for that step: the same step, saved collectively.
    assert {json.loads((out / "checkpoints" / tags[0] / f"rank_{r}.json").read_text())["step"] for r in (0, 1)} == {step}
    assert text.count(f"stopping at step {step} (SIGINT)") == 1, text[-3000:]
    rank_tracebacks = [line for line in text.splitlines() if line.startswith("[rank")]
    assert "KeyboardInterrupt" not in text and not rank_tracebacks, text[-3000:]
    # Rank 1 spoke into its log file, not the terminal; DeepSpeed's CUDA note reached neither.
    assert (out / "logs" / "rank1.log").is_file()
    assert "No CUDA runtime is found" not in text
    # A rerun resumes from the saved step.
    assert _saved_step(out) == step


def test_ranks_leave_when_torchrun_is_killed(synth_shards, tmp_path):
    out, log = tmp_path / "run", tmp_path / "torchrun.log"
    proc = _start(synth_shards, out, log)
    try:
        _wait_for_steps(out, proc)
        ranks = _ranks(proc.pid)
        assert len(ranks) == 2
        proc.kill()
        proc.wait()
        t0 = time.monotonic()
        while any(_alive(r) for r in ranks) and time.monotonic() - t0 < 40:
            time.sleep(0.2)
        gone_after = time.monotonic() - t0
        assert not any(_alive(r) for r in ranks), "ranks outlived their launcher by 40 s"
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if _group_alive(proc.pid) else None
    assert gone_after < 20, gone_after
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "preempted"  # they saved on the way out
    assert "launcher" in log.read_text(errors="replace")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
