"""Training with 2 real ranks from s3:// (moto on loopback, behind the fault proxy): a SIGTERM mid-epoch, then a
stalled store that stops the job with the named error, then a resume to the end: the same per-step losses and
sample digests as the same run from the local folder. The exported model then evaluates to the same accuracy
from s3:// and from the HTTP server (both `avpea eval` commands in one process)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from proctree import children, kill_tree

from clirun import avpea_commands
from servers import s3_env

REPO = str(Path(__file__).resolve().parents[2])
STEPS = 6  # tests/conftest.py's TWO_RANK_STEPS: every run here is its ``two_rank_cmd``

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


# Storage settings of the remote runs: a stalled read times out after 1 s and is retried once.
STORAGE = ["data.storage_timeout_s=1", "data.storage_retries=1", "data.storage_backoff_s=0.05"]


def _env(endpoint_port: int) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": REPO}
    env.update(s3_env(endpoint_port))
    return env


def _train_lines(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("split") == "train" and "loss" in rec:
            lines.append(rec)
    return lines


class Launch:
    def __init__(self, cmd: list[str], out: Path, log: Path, port: int) -> None:
        self.out, self.log, self.since = out, log, time.time()
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=_env(port), stdout=open(log, "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_for_step(self, step: int, timeout: float = 240) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(r["step"] >= step and r["time"] > self.since for r in _train_lines(self.out)):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"run ended (rc {self.proc.returncode}) before step {step}:\n"
                                     f"{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"no step {step} within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            kill_tree(self.proc)


def _evals(config: Path, shards: list[str], export: Path, port: int) -> list[float]:
    """`avpea eval --json` of the export on each shards root, in one fresh process (tests/remote/clirun.py)."""
    outs = avpea_commands([["eval", str(config), f"data.shards={root}", "--checkpoint", str(export), "--split",
                            "test", "--json"] for root in shards], _env(port), REPO, timeout=480)
    return [json.loads(out.strip().splitlines()[-1])["accuracy"] for out in outs]


def test_two_ranks_from_s3_sigterm_stall_and_resume_match_the_local_run(s3, moto, proxy_to, synth_shards,
                                                                        http_server, two_rank_reference,
                                                                        two_rank_cmd, tmp_path):
    from avpea_dist.data import remote

    url = f"{s3}/ave"
    remote.upload(synth_shards, url)
    proxy = proxy_to(moto)
    a, b = two_rank_reference, tmp_path / "b"  # a: the same run from the local folder (tests/conftest.py)
    log_b = tmp_path / "b.log"

    def cmd() -> list[str]:  # from s3://, a fresh rendezvous port each launch
        return two_rank_cmd(url, b, *STORAGE)

    run = Launch(cmd(), b, log_b, proxy.port)  # every byte through the proxy
    try:
        run.wait_for_step(3)
        ranks = children(run.proc.pid)
        assert len(ranks) == 2, ranks
        for pid in ranks:
            os.kill(pid, signal.SIGTERM)  # as Slurm preempts: mid-epoch (4 batches an epoch)
    finally:
        rc = run.wait()
    assert rc != 0 and "checkpoint saved, rerun the same command to resume" in log_b.read_text()

    run = Launch(cmd(), b, log_b, proxy.port)
    try:
        run.wait_for_step(4)
        t0 = time.monotonic()
        proxy.arm("stall", 10_000)  # the store stops answering: the next read must stop the job, not hang it
    finally:
        rc = run.wait(timeout=240)
    stopped_after = time.monotonic() - t0
    text = log_b.read_text()
    assert rc != 0 and "StorageError" in text and f"{url}/" in text and "failed 2 times" in text, text[-3000:]
    assert stopped_after < 120, stopped_after
    proxy.disarm()

    assert Launch(cmd(), b, log_b, proxy.port).wait() == 0, log_b.read_text()[-3000:]
    la, lb = _train_lines(a), _train_lines(b)
    assert [r["step"] for r in lb] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
    assert [r["data_digest"] for r in la] == [r["data_digest"] for r in lb]
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (a, b))
    assert ra["test_accuracy"] == rb["test_accuracy"]
    assert "testing" not in (b / "config.yaml").read_text()  # the dummy keys never reach the run folder

    shutil.copytree(synth_shards, http_server.httpd.root / "ave")
    export = b / "best" / "adapters.safetensors"
    from_s3, from_http = _evals(b / "config.yaml", [url, f"{http_server.url}/ave"], export, moto)
    assert from_s3 == rb["test_accuracy"] and from_http == rb["test_accuracy"]
