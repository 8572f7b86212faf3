"""Rendezvous ports: a free one for a local job, a per-job one under Slurm (every rank computes the same)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port free on this machine now (for a world of one, or a launcher started here)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rendezvous_port(job_id: str | None, fallback: int) -> int:
    """One port per Slurm job (20000-39999), so that two jobs sharing a node do not collide."""
    return 20000 + int(job_id) % 20000 if job_id and job_id.isdigit() else fallback
