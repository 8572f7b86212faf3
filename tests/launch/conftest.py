"""The session's real Slurm cluster (two nodes on this machine; see slurmkit.py), shared by every Slurm test.

It installs packages and edits the hosts file, so it starts only behind the suite's machine-change gate
(the ``machine_changes`` fixture in tests/conftest.py: CI=true or AVPEA_TEST_MACHINE_CHANGES=1).

Started once, at the first test that asks for it; at the end every job is cancelled and waited for, then
the daemons are stopped, leftovers of ours killed, the hosts file line removed and munged stopped (if we
started it; one that was already running is left alone).
"""

from __future__ import annotations

import os
import shutil

import pytest

from slurmkit import (MUNGE_PID, NODES, HostsEntry, install, new_cluster, start_cluster, start_munge, stop_cluster,
                      stop_pid_files)


@pytest.fixture(scope="session")
def slurm_cluster(machine_changes, tmp_path_factory: pytest.TempPathFactory):
    if os.geteuid() != 0:
        pytest.skip(f"a real Slurm needs root to install and start its daemons; tests run as uid {os.geteuid()}")
    if shutil.which("apt-get") is None:
        pytest.skip("a real Slurm is installed with apt-get (Debian's slurm-wlm), which this machine lacks")
    install()
    munge_pid = start_munge()
    hosts = HostsEntry(NODES)
    cluster = new_cluster(tmp_path_factory.mktemp("slurm"))
    try:
        start_cluster(cluster)
        yield cluster
    finally:
        stop_cluster(cluster)
        hosts.remove()
        if munge_pid is not None:
            stop_pid_files(MUNGE_PID)
