"""A node-local cache of whole remote shards, bounded in size, least recently used evicted.

Several ranks and loader workers of one node share it: one process downloads a shard while the others wait
on that entry's lock (``fcntl.flock``), then all read the same local file. An entry appears by an atomic
rename only once its bytes are all there; eviction (oldest access time first, under the cache-wide lock)
unlinks files, which a reader that has one open keeps reading (POSIX). An entry is keyed by its URL (secrets
stripped): a shard set rewritten in place under the same URLs needs the cache folder cleared, and a whole-shard
read through the cache is still hashed against the manifest, so a stale or damaged entry is found, evicted
and counted like any damaged shard.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from typing import Callable, Iterator

from . import name_of, redact

LOCK = ".lock"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class ShardCache:
    def __init__(self, folder: str | Path, max_bytes: int = 0) -> None:
        self.dir = Path(folder)
        self.max_bytes = max_bytes
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, url: str) -> Path:
        key = hashlib.sha256(redact(url).encode()).hexdigest()[:32]
        return self.dir / f"{key}-{name_of(url)}"

    def get(self, url: str, fetch: Callable[[Path], None]) -> Path:
        """The local copy of ``url``; ``fetch(tmp)`` writes it first when it is not cached (one process per
        entry at a time; a failed fetch leaves nothing behind)."""
        target = self.path(url)
        if target.is_file():
            _touch(target)
            return target
        with _locked(target.with_name(target.name + LOCK)):
            if target.is_file():  # another process fetched it while this one waited
                _touch(target)
                return target
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            try:
                fetch(tmp)
                os.replace(tmp, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        self.evict(keep=target)
        return target

    def drop(self, url: str) -> None:
        """Remove ``url``'s entry (found damaged)."""
        with contextlib.suppress(FileNotFoundError):
            self.path(url).unlink()

    def evict(self, keep: Path | None = None) -> list[str]:
        """Remove least recently used entries until the cache holds at most ``max_bytes``; -> names removed."""
        if not self.max_bytes:
            return []
        removed = []
        with _locked(self.dir / LOCK):
            entries = []
            for e in os.scandir(self.dir):
                if e.is_file() and not e.name.startswith(".") and not e.name.endswith(LOCK):
                    st = e.stat()
                    entries.append((st.st_atime_ns if st.st_atime_ns > st.st_mtime_ns else st.st_mtime_ns,
                                    e.name, st.st_size))
            total = sum(n for _, _, n in entries)
            for _, name, n in sorted(entries):
                if total <= self.max_bytes:
                    break
                if keep is not None and name == keep.name:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    (self.dir / name).unlink()
                    (self.dir / (name + LOCK)).unlink()
                total -= n
                removed.append(name)
        return removed


def _touch(path: Path) -> None:
    # filesystems mounted noatime never update atime: the mtime records the last use instead
    with contextlib.suppress(OSError):
        os.utime(path)
