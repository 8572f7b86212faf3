"""Training with 2 real ranks from s3:// (moto on loopback, behind the fault proxy): a SIGTERM mid-epoch, then a
stalled store that stops the job with the named error, then a resume to the end: the same per-step losses and
sample digests as the same run from the local folder. The exported model then evaluates to the same accuracy
from s3:// and from the HTTP server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from servers import s3_env

REPO = str(Path(__file__).resolve().parents[2])
TINY = str(Path(REPO) / "configs" / "avel_tiny.yaml")
STEPS = 6

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmd(shards: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
            str(_free_port()), "-m", "avpea_dist.train.entry", TINY, f"data.shards={shards}", f"train.out={out}",
            "model.img_size=32", "data.batch_size=2", "data.num_workers=1", "data.epoch_batches=4",
            f"train.steps={STEPS}", "train.eval_every=3", "train.ckpt_every=2", "train.log_every=1",
            "train.deterministic=true", "train.progress=false", "eval.batch_size=4", "optim.warmup_steps=2",
            "dist.timeout_s=60", "data.storage_timeout_s=1", "data.storage_retries=1",
            "data.storage_backoff_s=0.05"]


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


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _kill_tree(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        for pid in _children(proc.pid) + [proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()


class Launch:
    def __init__(self, shards: str, out: Path, log: Path, port: int) -> None:
        self.out, self.log, self.since = out, log, time.time()
        self.proc = subprocess.Popen(_cmd(shards, out), cwd=REPO, env=_env(port), stdout=open(log, "ab"),
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
            _kill_tree(self.proc)


def _eval(config: Path, shards: str, export: Path, port: int) -> float:
    ev = subprocess.run([sys.executable, "-m", "avpea_dist.cli", "eval", str(config), f"data.shards={shards}",
                         "--checkpoint", str(export), "--split", "test", "--json"],
                        cwd=REPO, env=_env(port), capture_output=True, text=True, timeout=240)
    assert ev.returncode == 0, ev.stderr[-3000:]
    return json.loads(ev.stdout.strip().splitlines()[-1])["accuracy"]


def test_two_ranks_from_s3_sigterm_stall_and_resume_match_the_local_run(s3, moto, proxy_to, synth_shards,
                                                                        http_server, tmp_path):
    from avpea_dist.data import remote

    url = f"{s3}/ave"
    remote.upload(synth_shards, url)
    proxy = proxy_to(moto)
    a, b = tmp_path / "a", tmp_path / "b"
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    assert Launch(str(synth_shards), a, log_a, moto).wait() == 0, log_a.read_text()[-3000:]

    run = Launch(url, b, log_b, proxy.port)  # every byte through the proxy
    try:
        run.wait_for_step(3)
        ranks = _children(run.proc.pid)
        assert len(ranks) == 2, ranks
        for pid in ranks:
            os.kill(pid, signal.SIGTERM)  # as Slurm preempts: mid-epoch (4 batches an epoch)
    finally:
        rc = run.wait()
    assert rc != 0 and "checkpoint saved, rerun the same command to resume" in log_b.read_text()

    run = Launch(url, b, log_b, proxy.port)
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

    assert Launch(url, b, log_b, proxy.port).wait() == 0, log_b.read_text()[-3000:]
    la, lb = _train_lines(a), _train_lines(b)
    assert [r["step"] for r in lb] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
    assert [r["data_digest"] for r in la] == [r["data_digest"] for r in lb]
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (a, b))
    assert ra["test_accuracy"] == rb["test_accuracy"]
    assert "testing" not in (b / "config.yaml").read_text()  # the dummy keys never reach the run folder

    shutil.copytree(synth_shards, http_server.httpd.root / "ave")
    export = b / "best" / "adapters.safetensors"
    assert _eval(b / "config.yaml", url, export, moto) == rb["test_accuracy"]
    assert _eval(b / "config.yaml", f"{http_server.url}/ave", export, moto) == rb["test_accuracy"]
