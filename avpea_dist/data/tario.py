"""Tar shards: a deterministic writer, and readers built on webdataset's stages that never trust the bytes.

Reading goes through ``ShardFile``, which counts every byte taken from disk (``bytes_read``) and, for a
shard read from its first byte to its last, hashes them on the way (sha256), so checking a shard against
its manifest entry costs no second pass. ``read_piece`` yields samples ``[start, stop)`` of one shard with
webdataset's ``tar_file_iterator`` and ``group_by_keys`` (nothing extracted to disk, nothing unpickled),
then one ``PieceEnd`` saying how many planned samples never came and, for a damaged shard, one line
naming it. A piece that starts mid-shard is reached by ``sample_offsets``, which reads tar headers only.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

import webdataset as wds

# Members that would be unpickled by generic decoders: never accepted.
PICKLE_SUFFIXES = (".pyd", ".pth", ".pt", ".pickle", ".pkl", ".ckpt")
_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, ValueError)
_BYTES_READ = [0]  # this process's bytes taken from shard files (the benchmark's measure)


def bytes_read() -> int:
    """Bytes this process has read from shard files so far."""
    return _BYTES_READ[0]


@dataclass
class RawSample:
    key: str
    members: dict[str, bytes] = field(default_factory=dict)
    error: str | None = None  # set when the sample is known to be corrupt before decoding


@dataclass
class PieceEnd:
    """The last item of a piece: samples planned but never read, and a line naming a damaged shard."""

    missing: int = 0
    problem: str | None = None


class TarShardWriter:
    """Writes samples to an open binary file with fixed owner and time, so equal input gives equal bytes."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self._tar = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.USTAR_FORMAT)
        self.samples = 0

    def write(self, key: str, members: dict[str, bytes]) -> None:
        for suffix, data in members.items():
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size, info.mtime, info.mode = len(data), 0, 0o444
            self._tar.addfile(info, io.BytesIO(data))
        self.samples += 1

    def close(self) -> None:
        self._tar.close()


class ShardFile(io.RawIOBase):
    """An unbuffered shard file that counts what it reads and, with ``hashing``, hashes it in order (then it
    refuses to seek, so the digest is of the whole file or of nothing)."""

    def __init__(self, path: str | Path, offset: int = 0, hashing: bool = False) -> None:
        super().__init__()
        self._f = open(path, "rb", buffering=0)
        self._f.seek(offset)
        self._sha = hashlib.sha256() if hashing and offset == 0 else None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._sha is None

    def readinto(self, b) -> int:  # type: ignore[override]
        n = self._f.readinto(b) or 0
        _BYTES_READ[0] += n
        if self._sha is not None:
            self._sha.update(memoryview(b)[:n])
        return n

    def seek(self, pos: int, whence: int = 0) -> int:
        if self._sha is not None:
            raise io.UnsupportedOperation("a hashing shard reader only reads forward")
        return self._f.seek(pos, whence)

    def tell(self) -> int:
        return self._f.tell()

    def hexdigest_to_end(self) -> str:
        """Read what the tar reader left (end-of-archive blocks) and return the digest of the whole file."""
        while self.read(1 << 16):
            pass
        return self._sha.hexdigest() if self._sha is not None else ""

    def close(self) -> None:
        self._f.close()
        super().close()


def _key(name: str) -> str:
    return wds.tariterators.base_plus_ext(name)[0] or name


def sample_offsets(path: str | Path, upto: int) -> list[int]:
    """Byte offsets of the first header of samples 0..upto (fewer if the tar ends first), from headers alone:
    the tar reader seeks over member data, so this costs 512 bytes a member."""
    offsets: list[int] = []
    last = None
    try:
        with ShardFile(path) as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for info in tar:
                if _key(info.name) != last:
                    if len(offsets) > upto:
                        break
                    offsets.append(info.offset)
                    last = _key(info.name)
    except _TAR_ERRORS:
        pass  # a damaged header ends the walk; the piece reader reports the samples it cannot reach
    return offsets


def _samples(f: BinaryIO, url: str) -> Iterator[RawSample]:
    """Samples of an open tar stream via webdataset's member iterator and key grouping; a sample with a
    repeated or pickle member is marked corrupt (group_by_keys reports the repeat to its handler, which
    runs before that sample is yielded)."""
    errors: list[str] = []

    def note(exn: Exception) -> bool:
        errors.append(str(exn.args[0]) if exn.args else repr(exn))
        return True

    def members() -> Iterator[dict]:
        for m in wds.tariterators.tar_file_iterator(f):
            yield {**m, "__url__": url}

    for s in wds.tariterators.group_by_keys(members(), lcase=False, handler=note):
        raw = RawSample(s["__key__"].rsplit("/", 1)[-1], {k: v for k, v in s.items() if not k.startswith("__")})
        pickled = [k for k in raw.members if ("." + k).endswith(PICKLE_SUFFIXES)]
        if pickled:
            raw.error = f"pickle member '{raw.key}.{pickled[0]}' refused"
            for k in pickled:
                del raw.members[k]
        if errors:
            raw.error, errors[:] = f"sample '{raw.key}': {errors[0]}", []
        yield raw


def read_piece(path: str | Path, start: int, stop: int, count: int, sha256: str | None,
               offset: int | None = 0) -> Iterator[RawSample | PieceEnd]:
    """Samples ``[start, stop)`` of a shard the manifest says holds ``count`` (``offset``: byte offset of
    sample ``start``; None when the tar ends before it), then one ``PieceEnd``. A shard read whole is also
    hashed and compared with ``sha256``; a partly read one is only counted, so an epoch boundary or a resume
    that reads part of a shard never raises a false alarm."""
    name, want = Path(path).name, stop - start
    whole = start == 0 and stop == count and sha256 is not None
    got, error, digest = 0, None, ""
    if offset is not None:
        try:
            with ShardFile(path, offset, hashing=whole) as f:
                for raw in _samples(f, name):
                    if got < want:
                        yield raw
                    got += 1
                    if got == want and not whole:
                        break
                if whole:
                    digest = f.hexdigest_to_end()
        except _TAR_ERRORS as e:  # OSError included: a shard deleted or unreadable mid-run
            error = f"{type(e).__name__}: {e}"
    problem = None
    if whole and (got != count or digest != sha256):
        problem = (f"shard {name}: {'sha256 mismatch with manifest' if digest != sha256 else error or 'damaged'}; "
                   f"{min(got, count)} of {count} samples read")
    elif got < want:
        problem = (f"shard {name}: the tar ends early ({error or 'damaged or missing tar header'}); "
                   f"{got} of the {want} samples at positions {start}..{stop - 1} read")
    yield PieceEnd(missing=want - min(got, want), problem=problem)


def iter_raw_samples(path: str | Path) -> Iterator[RawSample]:
    """Yield the samples of one whole shard in order; a shard cut short ends with one corrupt sample."""
    try:
        with ShardFile(path) as f:
            yield from _samples(f, Path(path).name)
    except _TAR_ERRORS as e:
        yield RawSample("", error=f"truncated or unreadable shard {Path(path).name}: {e}")
