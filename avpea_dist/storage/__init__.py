"""Where shard bytes live: a local folder, an S3 bucket (``s3://``) or an HTTP(S) server, behind one set of calls.

Every shard reader and writer goes through here (``data.tario.ShardFile`` for reads, ``data.remote`` for
uploads and downloads). Local paths keep plain file I/O. Remote URLs go through fsspec: s3fs for ``s3://``
(credentials and endpoint from the standard AWS places: ``AWS_ACCESS_KEY_ID`` ..., ``~/.aws``,
``AWS_ENDPOINT_URL`` for MinIO/Ceph/moto), fsspec's HTTP filesystem for ``http(s)://`` (byte ranges by
``Range`` requests; an answer that ignores the range is refused, not trusted).

Faults: a transient failure (connection reset, timeout, 5xx, 503 SlowDown) is retried ``retries`` times with
exponential backoff and full jitter; then one ``StorageError`` naming the URL, the attempts and the last
error. A missing object is ``FileNotFoundError`` at once (the readers count it as a vanished shard); a
refused credential is a ``StorageError`` at once (retrying cannot fix it). The libraries' own retry loops are
switched off so these bounds are the only ones. URLs are printed through ``redact`` (no password, no
signed-URL token ever reaches a log or a run folder).
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, TypeVar

T = TypeVar("T")

SCHEMES = ("s3", "http", "https")
"""The URL schemes this layer reads; anything else (no scheme, ``file://``) is a local path."""


class StorageError(RuntimeError):
    """Remote storage failed after every retry (or refused the credentials): the message names the URL and
    what was tried. Not an OSError on purpose: a shard reader counts OSErrors as damaged shards, whereas a
    store that does not answer must stop the step (the run then resumes like after any other failure)."""


@dataclass(frozen=True)
class Settings:
    retries: int = 5
    """Retries after the first attempt of one request."""
    backoff_s: float = 0.5
    """First backoff; doubled each retry, capped by ``backoff_max_s``, then drawn uniformly below (jitter)."""
    backoff_max_s: float = 20.0
    timeout_s: float = 60.0
    """Connect and read timeout of one request: a stalled server counts as a failed attempt after this."""
    cache_dir: str = ""
    """Local folder caching whole remote shards (least recently used evicted); '' = no cache."""
    cache_bytes: int = 0
    """Size bound of ``cache_dir``; 0 with a cache_dir = unbounded."""
    signed_reads: bool = True
    """S3 byte ranges read as presigned GETs over plain HTTP (see ``read_range``); False: through s3fs."""


_SETTINGS = [Settings()]
_LOCAL = threading.local()


def configure(**changes: Any) -> Settings:
    """Change this process's settings (worker processes forked later inherit them); -> the new settings.
    Filesystem handles made under the old settings are dropped."""
    new = replace(_SETTINGS[0], **changes)
    if new.retries < 0 or new.backoff_s < 0 or new.timeout_s <= 0 or new.cache_bytes < 0:
        raise ValueError(f"storage settings {new} need retries >= 0, backoff_s >= 0, timeout_s > 0, cache_bytes >= 0")
    _SETTINGS[0] = new
    _FS.clear()
    _SIGNED.clear()
    return new


def settings() -> Settings:
    return _SETTINGS[0]


# ---------------------------------------------------------------------------------------------
# URLs


def is_url(path: Any) -> bool:
    """True for ``s3://``, ``http://`` and ``https://`` URLs."""
    return isinstance(path, str) and path.split("://", 1)[0].lower() in SCHEMES and "://" in path


def join(root: Any, *names: str) -> str:
    """``root/name/...`` for a URL (kept a URL: ``pathlib`` would fold ``s3://`` to ``s3:/``) or a local path."""
    if is_url(root):
        return "/".join([str(root).rstrip("/"), *(n.strip("/") for n in names)])
    return os.path.join(str(root), *names)


def name_of(path: Any) -> str:
    """The last component of a path or URL (query string dropped)."""
    return str(path).split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)[^/@\s]+@")
_SECRET_QUERY = re.compile(r"(?i)([?&](?:x-amz-signature|x-amz-credential|x-amz-security-token|awsaccesskeyid|"
                           r"signature|sig|token|"
                           r"access_token|key|password|secret)=)[^&\s'\"]+")


def redact(text: Any) -> str:
    """``text`` with every URL's user:password and secret query parameters (signed-URL signatures, tokens)
    replaced by ``***``: what is printed or stored instead of a URL."""
    out = _USERINFO.sub(r"\g<scheme>***@", str(text))
    return _SECRET_QUERY.sub(r"\1***", out)


# ---------------------------------------------------------------------------------------------
# Filesystems and retries

_FS: dict[tuple[str, int], Any] = {}
_SIGNED: dict[tuple[int, str], tuple[str, float]] = {}  # (pid, s3 URL) -> (presigned URL, when signed)
SIGN_S = 3600
"""Lifetime of a presigned read URL; each is replaced after half of it (and after a refusal)."""


def filesystem(url: str) -> Any:
    """This process's fsspec filesystem for ``url``'s scheme, made with this layer's timeouts and with the
    library's retries off. One per process: an async filesystem's event loop does not survive a fork."""
    scheme = url.split("://", 1)[0].lower()
    scheme = "http" if scheme == "https" else scheme  # 'signed': the client of presigned reads (_signed_range)
    key = (scheme, os.getpid())
    fs = _FS.get(key)
    if fs is None:
        s = settings()
        try:
            import aiohttp  # noqa: F401  (both filesystems run on it)
            if scheme == "s3":
                import s3fs  # noqa: F401
        except ImportError as e:
            raise ValueError(f"{scheme}:// shards need {e.name}, which is not installed: pip install "
                             f"'avpea-dist[s3]' (docs/storage.md)") from None
        if scheme == "s3":
            import s3fs

            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
            fs = s3fs.S3FileSystem(skip_instance_cache=True, endpoint_url=endpoint, config_kwargs={
                "connect_timeout": s.timeout_s, "read_timeout": s.timeout_s,
                "retries": {"max_attempts": 1, "mode": "standard"}})
            fs.retries = 1  # s3fs's own loop would retry resets and 5xx again under ours
        else:
            import aiohttp
            from fsspec.implementations.http import HTTPFileSystem

            timeout = aiohttp.ClientTimeout(total=None, sock_connect=s.timeout_s, sock_read=s.timeout_s)
            # 'signed': presigned S3 URLs, sent exactly as signed (no requoting of the signature's query)
            fs = HTTPFileSystem(skip_instance_cache=True, client_kwargs={"timeout": timeout},
                                encoded=scheme == "signed")
        _FS[key] = fs
    return fs


def _refused(e: BaseException) -> bool:
    """A credential or permission refusal: retrying cannot fix it."""
    text = str(e)
    return isinstance(e, PermissionError) or any(w in text for w in (
        "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403 Forbidden", "ExpiredToken"))


def _cut_short(e: FileNotFoundError) -> bool:
    """A 'not found' that is really a failed connection: fsspec's HTTP ``info`` reports a HEAD and a GET that
    both failed (a reset, a 5xx) as FileNotFoundError; only a 404/410 or a missing key is a vanished object."""
    cause = e.__cause__
    if cause is None or isinstance(cause, FileNotFoundError):
        return False
    status = getattr(cause, "status", None)
    if isinstance(status, int):
        return status >= 500 or status == 429
    name = type(cause).__name__
    return isinstance(cause, (ConnectionError, TimeoutError)) or any(
        w in name for w in ("Connect", "Disconnect", "Timeout", "Payload"))


def retrying(what: str, url: str, call: Callable[[], T]) -> T:
    """``call()`` with the bounded retries of the module doc; ``what`` says what it does ('read bytes 0-99')."""
    s = settings()
    last, t0 = "", time.monotonic()
    for attempt in range(s.retries + 1):
        try:
            return call()
        except FileNotFoundError as e:
            if not _cut_short(e):
                raise
            last = f"{type(e.__cause__).__name__}: {redact(e.__cause__)}"
            if attempt < s.retries:
                time.sleep(random.uniform(0, min(s.backoff_max_s, s.backoff_s * 2 ** attempt)))
        except Exception as e:  # the libraries raise many types for one reset; all are retried alike
            if _refused(e):
                raise StorageError(f"{what} {redact(url)}: refused ({type(e).__name__}: {redact(e)}); check the "
                                   f"credentials (AWS_* environment variables or ~/.aws) and the bucket "
                                   f"policy") from None
            last = f"{type(e).__name__}: {redact(e) or 'no message'}"
            if attempt < s.retries:
                time.sleep(random.uniform(0, min(s.backoff_max_s, s.backoff_s * 2 ** attempt)))
    raise StorageError(f"{what} {redact(url)} failed {s.retries + 1} times in {time.monotonic() - t0:.1f} s (timeout "
                       f"{s.timeout_s:g} s per request, "
                       f"exponential backoff from {s.backoff_s:g} s); last error {last}. Check the store is "
                       f"reachable, or raise data.storage_retries / data.storage_timeout_s")


def _strip(url: str) -> str:
    # s3fs takes 'bucket/key'; the HTTP filesystem takes the whole URL
    return url.split("://", 1)[1] if url.lower().startswith("s3://") else url


# ---------------------------------------------------------------------------------------------
# Reads and writes (local paths and URLs alike)


def size(path: str) -> int:
    """Bytes of one file or object; ``FileNotFoundError`` when there is none."""
    if not is_url(path):
        return os.path.getsize(path)
    fs = filesystem(path)
    fs.invalidate_cache(_strip(path))  # local only: s3fs would answer from a listing made before a change
    info = retrying("size of", path, lambda: fs.info(_strip(path)))
    if info.get("size") is None:
        raise StorageError(f"{redact(path)}: the server gives no size; serve it with Content-Length")
    return int(info["size"])


def exists(path: str) -> bool:
    try:
        size(path)
        return True
    except FileNotFoundError:
        return False


def read_range(path: str, start: int, end: int) -> bytes:
    """Bytes ``[start, end)``; fewer when the file ends first (a short object is the caller's to count)."""
    if end <= start:
        return b""
    if not is_url(path):
        with open(path, "rb") as f:
            f.seek(start)
            return f.read(end - start)
    fs = filesystem(path)
    signed = path.lower().startswith("s3://") and settings().signed_reads

    def call() -> bytes:
        data = _signed_range(path, start, end) if signed else fs.cat_file(_strip(path), start=start, end=end)
        if len(data) > end - start:  # a server that ignored Range sent the whole object: never trusted
            raise StorageError(f"{redact(path)}: the server ignored the byte range {start}-{end - 1} and sent "
                               f"{len(data)} bytes; serve the shards from a server that honours Range requests")
        if len(data) < end - start and _fresh_size(fs, path) > start + len(data):
            # a cut answer for bytes the object has: transient (retried), not a short object
            raise ConnectionError(f"{len(data)} of {end - start} bytes arrived")
        return data

    try:
        return retrying(f"read bytes {start}-{end - 1} of", path, call)
    except FileNotFoundError:
        raise
    except StorageError:
        raise
    except Exception as e:  # an out-of-range request on a short object
        raise OSError(f"{redact(path)}: {e}") from None


def _signed_range(path: str, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of an S3 object by a GET of its presigned URL. A loader worker reads one range per
    sample, and botocore spends ~3 ms of CPU on each request (building, signing, parsing), under the GIL
    the worker's decoding needs; a presigned GET costs ~1 ms (measured: benchmarks/RESULTS.md). Each object is
    signed once per process per ``SIGN_S / 2``. The presigned URL carries a signature: it is never printed,
    and errors name the ``s3://`` URL. A refusal (403: the signature expired or the credentials changed) drops
    it and reads through s3fs, whose answer is the authoritative one."""
    key = (os.getpid(), path)
    hit = _SIGNED.get(key)
    if hit is None or time.monotonic() - hit[1] > SIGN_S / 2:
        try:
            hit = (filesystem(path).sign(_strip(path), expiration=SIGN_S), time.monotonic())
        except Exception:  # noqa: BLE001 - no way to sign here (no credentials: a public bucket): the S3 API decides
            return filesystem(path).cat_file(_strip(path), start=start, end=end)
        _SIGNED[key] = hit
    try:
        return filesystem("signed://").cat_file(hit[0], start=start, end=end)
    except FileNotFoundError:
        raise FileNotFoundError(f"{redact(path)}: no such object") from None
    except Exception as e:  # noqa: BLE001 - reported without the URL, which carries the signature
        status = getattr(e, "status", None)
        if status == 403:
            _SIGNED.pop(key, None)
            return filesystem(path).cat_file(_strip(path), start=start, end=end)
        # the exception's own text names the presigned URL: only its type, status and reason are kept
        raise ConnectionError(f"GET {redact(path)} (presigned): {type(e).__name__}"
                              + (f" {status}" if status else "") + f" {redact(getattr(e, 'message', '') or '')}")


def _fresh_size(fs: Any, path: str) -> int:
    fs.invalidate_cache(_strip(path))  # a listing cached earlier may describe the object before it changed
    return int(fs.info(_strip(path)).get("size") or 0)


def read_bytes(path: str) -> bytes:
    """A whole (small) file: manifests and indexes."""
    if not is_url(path):
        with open(path, "rb") as f:
            return f.read()
    fs = filesystem(path)
    return retrying("read", path, lambda: fs.cat_file(_strip(path)))


def listdir(root: str) -> dict[str, int]:
    """{name: bytes} of the files directly under ``root`` (a folder or URL prefix); {} when there is none.
    HTTP servers list nothing this layer can trust: {} (callers then check each file by name)."""
    if not is_url(root):
        try:
            return {e.name: e.stat().st_size for e in os.scandir(root) if e.is_file()}
        except FileNotFoundError:
            return {}
    if not root.lower().startswith("s3://"):
        return {}
    fs = filesystem(root)
    try:
        entries = retrying("list", root, lambda: fs.ls(_strip(root).rstrip("/"), detail=True, refresh=True))
    except FileNotFoundError:
        return {}
    return {name_of(e["name"]): int(e.get("size") or 0) for e in entries if e.get("type") == "file"}


def put_file(local: str, url: str, metadata: dict[str, str] | None = None) -> None:
    """Upload one file; S3 makes the object visible only once it is complete (large files go up in parts)."""
    if not url.lower().startswith("s3://"):
        raise ValueError(f"cannot write to {redact(url)}: uploads go to s3:// URLs (an HTTP server is read-only "
                         f"here; copy the folder onto it with the server's own tools)")
    fs = filesystem(url)
    extra = {"Metadata": metadata} if metadata else {}
    retrying("upload to", url, lambda: fs.put_file(local, _strip(url), **extra))


def object_metadata(url: str) -> dict[str, str]:
    """User metadata of an S3 object ({} elsewhere or when absent)."""
    if not url.lower().startswith("s3://"):
        return {}
    fs = filesystem(url)
    try:
        return dict(retrying("metadata of", url, lambda: fs.metadata(_strip(url))) or {})
    except FileNotFoundError:
        return {}


def remove(url: str) -> None:
    """Remove one object (nothing when it is absent)."""
    if not is_url(url):
        try:
            os.unlink(url)
        except FileNotFoundError:
            pass
        return
    fs = filesystem(url)
    try:
        retrying("remove", url, lambda: fs.rm_file(_strip(url)))
    except FileNotFoundError:
        pass


def url_writable(url: str) -> bool:
    """True where this layer can write objects: ``s3://`` URLs (and local paths)."""
    return not is_url(url) or url.lower().startswith("s3://")


def listdir_recursive(root: str) -> dict[str, int]:
    """{relative name ('/'-separated): bytes} of every file under ``root``; {} over HTTP (nothing to list)."""
    if not is_url(root):
        out = {}
        for dirpath, _, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                out[os.path.relpath(path, root).replace(os.sep, "/")] = os.path.getsize(path)
        return out
    if not root.lower().startswith("s3://"):
        return {}
    fs = filesystem(root)
    prefix = _strip(root).rstrip("/")
    found = retrying("list", root, lambda: fs.find(prefix, detail=True, withdirs=False))
    return {name[len(prefix) + 1:]: int(info.get("size") or 0) for name, info in found.items()
            if name.startswith(prefix + "/")}


def check_secret_free(url: str, setting: str) -> str:
    """``url`` unchanged, or a ValueError when it carries a password or token: ``setting`` is stored (run
    folders, configs, logs), and credentials must come from their standard places instead."""
    if redact(url) != str(url):
        raise ValueError(f"{setting}={redact(url)} carries credentials in the URL; it would be stored in the run "
                         f"folder. Give S3 keys through AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws, and "
                         f"HTTP passwords through ~/.netrc, and drop them from the URL")
    return url
