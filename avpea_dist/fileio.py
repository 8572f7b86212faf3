"""Atomic, crash-safe file writes and hashing, shared by shards, checkpoints and run folders.

Every file this package writes goes through here: a temp file in the same folder, fsync, rename,
fsync of the folder. A crash leaves either the old file or the new one, never half of one. Temp files and
folders (``mkstemp`` 0600, ``mkdtemp`` 0700) get the modes the user's umask gives any new file (0644, 0755
under umask 022) before they are renamed into place: shard folders and run folders are meant to be shared.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


_UMASK = _umask()  # read once: os.umask cannot be read without setting it (a race with other threads)
_FILE_MODE = 0o666 & ~_UMASK
_DIR_MODE = 0o777 & ~_UMASK


def temp_dir(prefix: str, dir: str | Path) -> Path:
    """``tempfile.mkdtemp`` with the mode the umask gives a new folder (not 0700): for a folder written whole
    and renamed into place."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    os.chmod(path, _DIR_MODE)
    return path


def fsync_dir(path: str | Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temp file beside ``path``; on clean exit fsync and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), _FILE_MODE)  # mkstemp makes 0600; a run folder is meant to be shared
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
