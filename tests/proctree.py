"""Leave no rank behind: kill a launcher and every process it started (torchrun's ranks sit in their own sessions)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def children(pid: int) -> list[int]:
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


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and its children if it is still running, then reap it."""
    if proc.poll() is None:
        for pid in children(proc.pid) + [proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
