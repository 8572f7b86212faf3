"""A real two-node Slurm on one machine, for the launch tests: installed with apt, configured, started, stopped.

Debian's slurmctld/slurmd/slurm-client and munge are installed (once; a later session finds them), munged
runs as user munge, one slurmctld and two slurmd daemons (nodes n1 and n2, one port each) run as root from
a config written into the session's temp folder and pointed to by SLURM_CONF: nothing in /etc/slurm is
touched. The node names resolve through one line added to the hosts file (Slurm hands them out in
SLURM_JOB_NODELIST and they become MASTER_ADDR); the line is removed again at the end. One-node tests run
on the same cluster: a one-node job takes n1 or n2, each with all of the machine's CPUs.

Installing and editing /etc/hosts change the machine: only the ``slurm_cluster`` fixture calls these, behind
the suite's gate (CI=true or AVPEA_TEST_MACHINE_CHANGES=1; see tests/conftest.py).
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
HOSTS = Path("/etc/hosts")
NODES = ("n1", "n2")
SBIN = "/usr/sbin"
# Every process our slurmd daemons start inherits this variable: how the tests find a node's processes.
NODE_VAR = "AVPEA_TEST_SLURM_NODE"
# A requeued job may start again only once its job credential has expired (cred_expire + 1 s; Slurm's
# default is 120 s, its minimum 5 s), and then at the next pass of a scheduling loop (every 60 s and 30 s by
# default). Measured here: back after 6 s with these settings, 26 s with the loops' defaults, 122 s with
# Slurm's. Short, so that the preemption tests see the requeued job come back within seconds.
CRED_EXPIRE_S = 5
SCHEDULER_PARAMETERS = "sched_interval=1,bf_interval=1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install() -> None:
    missing = [b for b in ("slurmctld", "slurmd", "sbatch", "munged")
               if shutil.which(b, path=os.environ["PATH"] + ":/usr/sbin:/sbin") is None]
    if not missing:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
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


def start_munge() -> int | None:
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


class HostsEntry:
    """One line ``127.0.0.1 n1 n2  # <tag>`` in the hosts file for the session; ``remove`` takes out exactly
    that line again (rewritten in place: the hosts file may be a mount point; other lines are kept as they are
    then, even if someone else changed them meanwhile)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.line = f"127.0.0.1 {' '.join(names)}  # avpea slurm test {os.getpid()}"
        text = HOSTS.read_text()
        HOSTS.write_text(text + ("" if text.endswith("\n") or not text else "\n") + self.line + "\n")

    def remove(self) -> None:
        lines = HOSTS.read_text().splitlines(keepends=True)
        HOSTS.write_text("".join(line for line in lines if line.rstrip("\n") != self.line))


def write_conf(folder: Path) -> Path:
    mem_mib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal:"))) // 1024
    (folder / "state").mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0]  # slurmctld runs only where SlurmctldHost names this machine
    nodes = "".join(f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={_free_port()} CPUs={os.cpu_count()} "
                    f"RealMemory={int(mem_mib * 0.9)} State=UNKNOWN\n" for n in NODES)
    conf = folder / "slurm.conf"
    conf.write_text(f"""\
ClusterName=avpeatest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire={CRED_EXPIRE_S}
CredType=cred/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool_%n
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd_%n.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd_%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters={SCHEDULER_PARAMETERS}
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
KillWait=5
InactiveLimit=0
{nodes}PartitionName=debug Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def stop_pid_files(*pid_files: Path) -> None:
    """SIGTERM to every daemon named by ``pid_files`` at once, then wait for all (SIGKILL after 10 s)."""
    pids = []
    for pid_file in pid_files:
        try:
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGTERM)
            pids.append(pid)
        except (OSError, ValueError):
            continue
    deadline = time.time() + 10
    for pid in pids:
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _environ(pid: str) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


@dataclass
class SlurmCluster:
    conf: Path
    folder: Path
    env: dict[str, str]
    nodes: tuple[str, ...] = NODES

    def run(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)

    def log(self, name: str) -> str:
        path = self.folder / name
        return path.read_text()[-3000:] if path.is_file() else f"({name} missing)"

    def node_states(self) -> dict[str, str]:
        out = self.run("sinfo", "-h", "-N", "-o", "%N %T").stdout.split()
        return dict(zip(out[::2], out[1::2]))

    def wait_idle(self, timeout_s: float = 30) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            states = self.node_states()
            if all(states.get(n) in ("idle", "mixed", "allocated") for n in self.nodes):
                return
            time.sleep(0.1)
        pytest.fail(f"the nodes did not come up (sinfo says {states}):\n{self.log('slurmctld.log')}\n"
                    + "\n".join(self.log(f"slurmd_{n}.log") for n in self.nodes))

    def start_node(self, node: str) -> None:
        env = dict(self.env, **{NODE_VAR: node})
        subprocess.run([f"{SBIN}/slurmd", "-c", "-f", str(self.conf), "-N", node], env=env, check=True, timeout=60)

    def processes(self, node: str | None = None, job_id: str | None = None) -> list[int]:
        """Pids of processes our daemons started (they carry SLURM_CONF=<our config>), optionally only those
        of one node (its slurmd, step daemons and tasks) or of one job."""
        marker = f"SLURM_CONF={self.conf}".encode()
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            env = _environ(proc.name)
            if marker not in env:
                continue
            if node is not None and not {f"{NODE_VAR}={node}".encode(), f"SLURMD_NODENAME={node}".encode()} & set(env):
                continue
            if job_id is not None and f"SLURM_JOB_ID={job_id}".encode() not in env:
                continue
            pids.append(int(proc.name))
        return pids

    def kill(self, pids: list[int]) -> None:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def lose_node(self, node: str) -> None:
        """The node dies: its slurmd, its job step daemons and every task process on it, at once (with the
        process groups they lead: Ray's agents, for one, carry only a trimmed environment)."""
        pids = self.processes(node=node)
        groups = {pid for pid in pids if _pgid(pid) == pid}
        self.kill(pids + [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                          and _pgid(int(p.name)) in groups])

    def drain(self) -> None:
        """Cancel this cluster's jobs and wait until they have left the queue (their step daemons exit too)."""
        jobs = self.run("squeue", "-h", "-o", "%i").stdout.split()
        if jobs:
            self.run("scancel", *jobs)
        for _ in range(300):
            if not self.run("squeue", "-h", "-o", "%i").stdout.strip():
                return
            time.sleep(0.1)


def new_cluster(folder: Path) -> SlurmCluster:
    conf = write_conf(folder)
    return SlurmCluster(conf, folder, dict(os.environ, SLURM_CONF=str(conf)))


def start_cluster(cluster: SlurmCluster) -> None:
    conf = cluster.conf
    subprocess.run([f"{SBIN}/slurmctld", "-c", "-f", str(conf)], env=cluster.env, check=True, timeout=60)
    for node in cluster.nodes:
        cluster.start_node(node)
    cluster.wait_idle()


def stop_cluster(cluster: SlurmCluster) -> None:
    """Jobs first (scancel, then wait), then the daemons, then anything of ours that outlived them (a step
    daemon orphaned by a stopped slurmd never exits)."""
    try:
        cluster.drain()
    finally:
        stop_pid_files(*(cluster.folder / f"slurmd_{node}.pid" for node in cluster.nodes),
                       cluster.folder / "slurmctld.pid")
        cluster.kill(cluster.processes())
