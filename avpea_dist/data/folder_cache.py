"""A small folder under a shards URL (``s3://``, ``http(s)://``) as a local folder: what code that only reads
paths (tokenizers, ``from_pretrained``) needs from remote shards.

The folder is fetched once per process through ``storage`` into a node cache (``data.cache_dir`` when set, else
``$XDG_CACHE_HOME/avpea/folders`` or ``~/.cache/avpea/folders``), each file checked against its sha256 when the
caller has them. An entry is keyed by the URL (secrets stripped) and what the files are (their hashes, else
their sizes), so a folder rewritten under the same URL lands in a new entry. It appears by one rename of a
complete temporary folder; ranks of one node racing for it each download into their own temporary folder and
the first rename wins (renaming onto a non-empty folder fails on POSIX: the loser drops its copy and uses the
winner's). Local paths are returned unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path, PurePosixPath

from .. import storage
from ..fileio import temp_dir

FOLDERS = "folders"
_FETCHED: dict[tuple[str, str], Path] = {}


def cache_root() -> Path:
    """Where fetched folders go: ``data.cache_dir/folders`` when a cache is configured, else the user cache."""
    configured = storage.settings().cache_dir
    if configured:
        return Path(configured) / FOLDERS
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "avpea" / FOLDERS


def local_folder(url: str | Path, sha256: dict[str, str] | None = None, root: str | Path | None = None) -> Path:
    """The local copy of the folder at ``url`` (a local path: itself). ``sha256``: {relative name: hex digest}
    of its files, fetched and checked one by one (the only way to name files over HTTP, which lists nothing);
    without it the folder is listed (S3). A missing file or a digest that differs is an error naming it."""
    if not storage.is_url(url):
        return Path(url)
    url = str(url).rstrip("/")
    where = Path(root) if root is not None else cache_root()
    memo = (url, str(where))
    if memo in _FETCHED and _FETCHED[memo].is_dir():
        return _FETCHED[memo]
    files = {n: -1 for n in sha256} if sha256 else storage.listdir_recursive(url)
    if not files:
        raise FileNotFoundError(
            f"nothing found under {storage.redact(url)}: the folder is missing, or the server lists nothing "
            f"(HTTP) and the manifest records no file hashes for it. Rebuild the shards with this version (the "
            f"manifest then names the files), upload the whole shards folder again, or use a local copy")
    for name in files:
        if name.startswith("/") or ".." in PurePosixPath(name).parts:
            raise ValueError(f"{storage.redact(url)}: refusing file name {name!r} (it leaves the folder)")
    what = json.dumps(sha256 or files, sort_keys=True)
    key = hashlib.sha256(f"{storage.redact(url)}\n{what}".encode()).hexdigest()[:20]
    target = where / f"{key}-{storage.name_of(url)}"
    if not target.is_dir():
        where.mkdir(parents=True, exist_ok=True)
        _fetch_into(url, sorted(files), sha256 or {}, target)
    _FETCHED[memo] = target
    return target


def _fetch_into(url: str, names: list[str], sha256: dict[str, str], target: Path) -> None:
    tmp = temp_dir(f".{target.name}.", target.parent)
    try:
        for name in names:
            data = storage.read_bytes(storage.join(url, name))
            want = sha256.get(name)
            if want is not None and hashlib.sha256(data).hexdigest() != want:
                raise ValueError(f"{storage.redact(storage.join(url, name))}: sha256 differs from the manifest's "
                                 f"(damaged or replaced); upload the shards folder again")
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not the lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def folder_hashes(folder: str | Path) -> dict[str, str]:
    """{relative name ('/'-separated): sha256} of every file under a local ``folder``: what ``local_folder``
    checks a fetched copy against (a build records it in the manifest)."""
    folder = Path(folder)
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        out[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
