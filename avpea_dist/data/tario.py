"""Tar shards: a deterministic writer, and readers built on webdataset's stages that never trust the bytes.

Reading goes through ``ShardFile``, which counts every byte taken from disk (``bytes_read``) and, for a
shard read from its first byte to its last, hashes them on the way (sha256), so checking a shard against
its manifest entry costs no second pass. ``read_piece`` yields samples ``[start, stop)`` of one shard with
webdataset's ``tar_file_iterator`` and ``group_by_keys`` (nothing extracted to disk, nothing unpickled),
then one ``PieceEnd`` saying how many planned samples never came and, for a damaged shard, one line
naming it. A piece that starts mid-shard is reached by the index's byte offsets or, for a folder built
before them, by ``sample_offsets``, which reads tar headers only. Paths may be ``s3://`` or ``http(s)://``
URLs (``avpea_dist.storage``).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np
import webdataset as wds

from .. import storage
from ..storage.cache import ShardCache

# Members that would be unpickled by generic decoders: never accepted.
PICKLE_SUFFIXES = (".pyd", ".pth", ".pt", ".pickle", ".pkl", ".ckpt")
_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, ValueError)
_BYTES_READ = [0]  # this process's bytes delivered by shard readers (the benchmark's measure)
_BYTES_FETCHED = [0]  # bytes this process fetched from remote storage (read-ahead and cache fills included)


def bytes_read() -> int:
    """Bytes this process has read from shard files so far."""
    return _BYTES_READ[0]


def bytes_fetched() -> int:
    """Bytes this process has fetched from remote storage so far."""
    return _BYTES_FETCHED[0]


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
    """An unbuffered shard reader over a local path or an ``s3://`` / ``http(s)://`` URL (``storage``) that
    counts what it delivers and, with ``hashing``, hashes it in order (then it refuses to seek, so the digest
    is of the whole file or of nothing). ``end``: exclusive byte bound; a remote reader then requests exactly
    ``[offset, end)``. Without it a remote reader fetches growing blocks (1 MiB, doubling to 8 MiB) and keeps
    the last one, so a header walk's seeks are served from memory. With ``storage.settings().cache_dir`` a
    remote shard is first copied whole into the node's cache (``storage.cache``) and read from there."""

    def __init__(self, path: str | Path, offset: int = 0, hashing: bool = False, end: int | None = None) -> None:
        super().__init__()
        self.url = str(path)
        self._sha = hashlib.sha256() if hashing and offset == 0 else None
        self._end = end
        self._f = None
        self._pos = offset
        self._block = _FIRST_BLOCK
        self._buf, self._buf_at = b"", 0
        self._size: int | None = None
        self.cached: Path | None = None
        if storage.is_url(self.url):
            cache = _cache()
            if cache is not None:
                self.cached = cache.get(self.url, lambda tmp: _download(self.url, tmp))
                self._f = open(self.cached, "rb", buffering=0)
        else:
            self._f = open(path, "rb", buffering=0)
        if self._f is not None:
            self._f.seek(offset)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._sha is None

    def _limit(self) -> int:
        if self._end is not None:
            return self._end
        if self._size is None:
            self._size = storage.size(self.url)
        return self._size

    def _fill(self, want: int) -> None:
        """Fetch the block at ``_pos`` (at least ``want`` bytes when the object has them)."""
        limit = self._limit()
        n = min(limit - self._pos, self._block if self._end is None else limit - self._pos)
        n = max(n, min(want, limit - self._pos))
        if n <= 0:
            self._buf, self._buf_at = b"", self._pos
            return
        self._buf = storage.read_range(self.url, self._pos, self._pos + n)
        self._buf_at = self._pos
        _BYTES_FETCHED[0] += len(self._buf)
        if len(self._buf) < n:  # the object ends before the bound: it is shorter than its manifest entry
            self._end = self._size = self._pos + len(self._buf)
        self._block = min(self._block * 2, _MAX_BLOCK)

    def readinto(self, b) -> int:  # type: ignore[override]
        view = memoryview(b)
        if self._end is not None:
            view = view[:max(0, self._end - self._pos)]
        if self._f is not None:
            n = self._f.readinto(view) or 0
        else:
            if not self._buf_at <= self._pos < self._buf_at + len(self._buf):
                self._fill(len(view))
            at = self._pos - self._buf_at
            chunk = self._buf[at:at + len(view)] if at >= 0 else b""
            n = len(chunk)
            view[:n] = chunk
        self._pos += n
        _BYTES_READ[0] += n
        if self._sha is not None:
            self._sha.update(view[:n])
        return n

    def seek(self, pos: int, whence: int = 0) -> int:
        if self._sha is not None:
            raise io.UnsupportedOperation("a hashing shard reader only reads forward")
        if whence == 1:
            pos += self._pos
        elif whence == 2:
            pos += self._limit() if self._f is None else os.fstat(self._f.fileno()).st_size
        self._pos = pos
        if self._f is not None:
            self._f.seek(pos)
        return pos

    def tell(self) -> int:
        return self._pos

    def hexdigest_to_end(self) -> str:
        """Read what the tar reader left (end-of-archive blocks) and return the digest of the whole file."""
        while self.read(1 << 16):
            pass
        return self._sha.hexdigest() if self._sha is not None else ""

    def drop_cached(self) -> None:
        """Forget this shard's cache entry (it failed its hash check)."""
        cache = _cache()
        if self.cached is not None and cache is not None:
            cache.drop(self.url)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
        self._buf = b""
        super().close()


_FIRST_BLOCK, _MAX_BLOCK = 1 << 20, 8 << 20
_CACHES: dict[tuple[str, int], ShardCache] = {}


def _cache() -> ShardCache | None:
    s = storage.settings()
    if not s.cache_dir:
        return None
    key = (s.cache_dir, s.cache_bytes)
    if key not in _CACHES:
        _CACHES[key] = ShardCache(s.cache_dir, s.cache_bytes)
    return _CACHES[key]


def _download(url: str, target: Path) -> None:
    """Copy a whole remote shard to ``target`` in 8 MiB ranges (each retried on its own)."""
    total = storage.size(url)
    with open(target, "wb") as out:
        for at in range(0, total, _MAX_BLOCK):
            data = storage.read_range(url, at, min(total, at + _MAX_BLOCK))
            _BYTES_FETCHED[0] += len(data)
            if len(data) != min(total, at + _MAX_BLOCK) - at:
                raise OSError(f"{storage.redact(url)}: short read at byte {at} ({len(data)} bytes)")
            out.write(data)


def _key(name: str) -> str:
    return wds.tariterators.base_plus_ext(name)[0] or name


_SPANS: dict[str, tuple[Any, int | None]] = {}


def note_spans(path: str | Path, offsets: Any, data_end: int | None) -> None:
    """Record where each sample of a shard starts (its first tar header, in order) and where the last one's
    bytes end (None: unknown), from the index or a header walk; ``read_piece`` then bounds a piece it is given
    without an ``end`` by them, so a remote read fetches exactly the piece's bytes."""
    _SPANS[str(path)] = (offsets, data_end)


def _piece_end(path: str | Path, offset: int, samples: int) -> int | None:
    known = _SPANS.get(str(path))
    if known is None:
        return None
    offsets, data_end = known
    i = int(np.searchsorted(offsets, offset))
    if i >= len(offsets) or int(offsets[i]) != offset:
        return None
    j = i + samples
    return int(offsets[j]) if j < len(offsets) else data_end


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
    if storage.is_url(str(path)) and len(_SPANS.get(str(path), ((), None))[0]) < len(offsets):
        note_spans(path, np.asarray(offsets, dtype=np.int64), None)  # the last sample's end stays unknown
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
               offset: int | None = 0, end: int | None = None) -> Iterator[RawSample | PieceEnd]:
    """Samples ``[start, stop)`` of a shard (a path or URL) the manifest says holds ``count`` (``offset``: byte
    offset of sample ``start``; None when the tar ends before it; ``end``: where sample ``stop - 1``'s bytes
    end, from the index, so a remote read fetches exactly the piece), then one ``PieceEnd``. A shard read
    whole is also hashed and compared with ``sha256``; a partly read one is only counted, so an epoch boundary
    or a resume that reads part of a shard never raises a false alarm. A vanished or short object counts as
    damaged; a store that does not answer raises ``storage.StorageError``."""
    name, want = storage.name_of(path), stop - start
    whole = start == 0 and stop == count and sha256 is not None
    if end is None and offset is not None and not whole:
        end = _piece_end(path, offset, want)
    got, error, digest = 0, None, ""
    if offset is not None:
        try:
            with ShardFile(path, offset, hashing=whole, end=None if whole else end) as f:
                for raw in _samples(f, name):
                    if got < want:
                        yield raw
                    got += 1
                    if got == want and not whole:
                        break
                if whole:
                    digest = f.hexdigest_to_end()
                    if digest != sha256:
                        f.drop_cached()
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
            yield from _samples(f, storage.name_of(path))
    except _TAR_ERRORS as e:
        yield RawSample("", error=f"truncated or unreadable shard {storage.name_of(path)}: {storage.redact(e)}")
