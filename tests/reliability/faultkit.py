"""A pre-imported launcher (a zygote) for real multi-rank training jobs with planted faults.

``python faultkit.py serve`` imports torch, DeepSpeed, timm and the package once (about 8 s of CPU),
then, per job request read from stdin, forks one process per rank. Each rank plants its faults
(``rankfaults.py``) and calls the real entry point ``avpea_dist.train.entry.main`` - the code that
``torchrun`` and ``srun`` start. Forking a warm, single-threaded interpreter is what lets 20+ SIGKILL
trials fit the CI budget.

The zygote waits for the ranks with a hard deadline: a rank still alive then counts as a hang and is
killed (it prints its stack into its log 5 s before). Ranks frozen by SIGSTOP are reaped once every
other rank has exited. The reply gives each rank's exit code, killing signal, exit time and CPU time,
and any process of the zygote's group left behind (a loader worker outliving its rank, say). The test
side (``Zygote``) runs the zygote in its own session and kills its whole process group when done.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# --------------------------------------------------------------------------------------------------
# Zygote side


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stopped(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


def _group_members() -> list[int]:
    me, pgid, out = os.getpid(), os.getpgid(0), []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(entry))
    return out


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    job.setdefault("port", _free_port())
    sys.stdout.flush()
    sys.stderr.flush()
    t_start = time.time()
    pids: dict[int, int] = {}
    for rank in range(job["world"]):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                from rankfaults import rank_main

                code = rank_main(rank, job)
            except BaseException:  # noqa: BLE001 - a crash in the harness itself: print it, exit 1
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        pids[rank] = pid
    ranks: dict[int, dict[str, Any]] = {}
    deadline = t_start + job["deadline_s"]
    hung = False
    while len(ranks) < len(pids):
        now = time.time()
        alive = [r for r in pids if r not in ranks]
        if ranks and alive and all(_stopped(pids[r]) for r in alive):  # only frozen ranks are left: reap them
            for rank in alive:
                os.kill(pids[rank], signal.SIGKILL)
        if now > deadline:
            hung = True
            for rank, pid in pids.items():
                if rank not in ranks:
                    os.kill(pid, signal.SIGKILL)
        for rank, pid in pids.items():
            if rank in ranks:
                continue
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                ranks[rank] = {"rank": rank, "pid": pid, "t_exit": time.time(),
                               "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                               "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                               "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}
        time.sleep(0.005)
    leftovers: list[int] = []
    for _ in range(400):  # loader workers and forkservers of a dead rank must go away by themselves
        leftovers = _group_members()
        if not leftovers:
            break
        time.sleep(0.01)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    return {"t_start": t_start, "hung": hung, "leftovers": leftovers,
            "ranks": [ranks[r] for r in sorted(ranks)]}


def serve() -> None:
    # Everything a rank needs, imported once; the ranks are forked from this warm interpreter.
    import deepspeed  # noqa: F401
    import deepspeed.runtime.engine  # noqa: F401
    import safetensors.torch  # noqa: F401
    import timm  # noqa: F401
    import torch
    from torch.utils.tensorboard import SummaryWriter  # noqa: F401

    import avpea_dist.data.loaders  # noqa: F401
    import avpea_dist.models.model  # noqa: F401
    import avpea_dist.train.entry  # noqa: F401
    import avpea_dist.train.run  # noqa: F401
    import rankfaults  # noqa: F401

    torch.set_num_threads(1)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(run_job(json.loads(line))), flush=True)
        import threading

        assert threading.active_count() == 1, "the zygote must stay single-threaded to fork safely"


# --------------------------------------------------------------------------------------------------
# Test side


@dataclass
class Job:
    log_dir: Path
    report: dict[str, Any]
    wall_s: float

    def code(self, rank: int) -> int | None:
        return self.report["ranks"][rank]["code"]

    def signal(self, rank: int) -> int | None:
        return self.report["ranks"][rank]["signal"]

    def log(self, rank: int) -> str:
        path = self.log_dir / f"rank{rank}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def events(self, rank: int, kind: str | None = None) -> list[dict[str, Any]]:
        path = self.log_dir / f"rank{rank}.events.jsonl"
        out = []
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a line torn by the SIGKILL
        return [e for e in out if kind is None or e["ev"] == kind]

    @property
    def hung(self) -> bool:
        return self.report["hung"]

    def describe(self) -> str:
        logs = "\n".join(f"--- rank {r} (code {self.code(r)}, signal {self.signal(r)}):\n{self.log(r)[-3000:]}"
                         for r in range(len(self.report["ranks"])))
        return f"{json.dumps(self.report)}\n{logs}"


@dataclass
class Zygote:
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1", TQDM_DISABLE="1",
                   PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **self.env)
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__)), "serve"], cwd=REPO, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        line = self._read(180)
        if line.strip() != "ready":
            self.close()
            raise RuntimeError(f"the fault-injection zygote did not start: {line!r}")

    def _read(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"the zygote did not answer within {timeout:.0f} s")
        return self.proc.stdout.readline()

    def run(self, log_dir: Path, config: str, overrides: list[str], *, faults: list[dict[str, Any]] = (),
            world: int = 2, deadline_s: float = 120, rank_overrides: dict[int, list[str]] | None = None) -> Job:
        """Run one job of ``world`` ranks to the end (or to ``deadline_s``, which counts as a hang)."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        log_dir.mkdir(parents=True, exist_ok=True)
        request = {"world": world, "config": config, "overrides": list(overrides), "faults": list(faults),
                   "log_dir": str(log_dir), "deadline_s": deadline_s,
                   "rank_overrides": {str(k): v for k, v in (rank_overrides or {}).items()}}
        t0 = time.time()
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            reply = self._read(deadline_s + 30)
            report = json.loads(reply)
        except BaseException:
            self.close()  # a test timeout mid-job: no rank of it may outlive the test
            raise
        return Job(log_dir, report, time.time() - t0)

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.proc = None


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        serve()
    else:
        sys.exit("usage: faultkit.py serve   (started by the reliability tests)")
