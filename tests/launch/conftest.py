"""A real single-node Slurm for the launch tests: installed with apt, configured, started, stopped.

Debian's slurmctld/slurmd/slurm-client and munge are installed (once; a later session finds them),
munged runs as user munge, and both Slurm daemons run as root from a config written into this session's
temp folder, pointed to by SLURM_CONF: nothing in /etc/slurm is touched. Every daemon this fixture
starts is stopped at the end of the session (by its pid file); one that was already running is left alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
MUNGE_PID = Path("/run/munge/munged.pid")


@dataclass
class SlurmCluster:
    conf: Path
    folder: Path
    node: str
    env: dict[str, str]

    def run(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _install() -> None:
    missing = [b for b in ("slurmctld", "slurmd", "sbatch", "munged") if shutil.which(b, path=os.environ["PATH"]
                                                                               + ":/usr/sbin:/sbin") is None]
    if not missing:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                                                *PACKAGES]):
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if out.returncode:
            pytest.fail(f"`{' '.join(cmd)}` failed ({out.returncode}); Slurm cannot be installed on this machine:\n"
                        f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


def _munge_ok() -> bool:
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        return cred.returncode == 0 and subprocess.run(["unmunge"], input=cred.stdout, capture_output=True,
                                                       timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _start_munge() -> int | None:
    """Start munged as user munge unless one answers already; returns the pid started, if any."""
    if _munge_ok():
        return None
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", shutil.which("munged", path="/usr/sbin:/sbin:/usr/bin")],
                   check=True, timeout=30)
    for _ in range(50):
        if _munge_ok():
            return int(MUNGE_PID.read_text()) if MUNGE_PID.is_file() else None
        time.sleep(0.1)
    pytest.fail("munged started but `munge -n | unmunge` fails; see /var/log/munge/munged.log")


def _write_conf(folder: Path, node: str) -> Path:
    mem_mib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal:"))) // 1024
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(f"""\
ClusterName=avpeatest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
KillWait=5
InactiveLimit=0
NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={int(mem_mib * 0.9)} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _stop(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def _drain(cluster: SlurmCluster) -> None:
    """Cancel this cluster's jobs and wait until they have left the queue (their slurmstepd exit with them)."""
    jobs = cluster.run("squeue", "-h", "-o", "%i").stdout.split()
    if jobs:
        cluster.run("scancel", *jobs)
    for _ in range(300):
        if not cluster.run("squeue", "-h", "-o", "%i").stdout.strip():
            return
        time.sleep(0.1)


def _kill_leftovers(conf: Path) -> None:
    """Kill, by pid, processes our daemons started that outlived them (a slurmstepd orphaned by a stopped slurmd
    never exits): they, and only they, carry SLURM_CONF pointing at this session's config."""
    marker = f"SLURM_CONF={conf}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            continue


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    if os.geteuid() != 0:
        pytest.skip(f"a real Slurm needs root to install and start its daemons; tests run as uid {os.geteuid()}")
    if shutil.which("apt-get") is None:
        pytest.skip("a real Slurm is installed with apt-get (Debian's slurm-wlm), which this machine lacks")
    _install()
    munge_pid = _start_munge()
    folder = tmp_path_factory.mktemp("slurm")
    node = socket.gethostname().split(".")[0]
    conf = _write_conf(folder, node)
    env = dict(os.environ, SLURM_CONF=str(conf))
    sbin = "/usr/sbin"
    try:
        subprocess.run([f"{sbin}/slurmctld", "-c", "-f", str(conf)], env=env, check=True, timeout=60)
        subprocess.run([f"{sbin}/slurmd", "-c", "-f", str(conf), "-N", node], env=env, check=True, timeout=60)
        cluster = SlurmCluster(conf, folder, node, env)
        state = ""
        for _ in range(300):
            out = cluster.run("sinfo", "-h", "-N", "-o", "%T")
            state = out.stdout.strip()
            if state in ("idle", "mixed"):
                break
            time.sleep(0.1)
        else:
            logs = "\n".join((folder / f).read_text()[-1500:] for f in ("slurmctld.log", "slurmd.log")
                             if (folder / f).is_file())
            pytest.fail(f"the node did not become idle (sinfo says {state!r}):\n{logs}")
        yield cluster
        _drain(cluster)
    finally:
        _stop(folder / "slurmd.pid")
        _stop(folder / "slurmctld.pid")
        _kill_leftovers(conf)
        if munge_pid is not None:
            _stop(MUNGE_PID)
