"""The optional parts of the install (pyproject's extras) and the one error a command gives when its part is
missing: which ``pip install`` line brings it.

The core install trains, evaluates and predicts AVEL, builds shards and submits jobs. Ray Tune sweeps, the
text tasks (retrieval, captioning, the VALOR text side) and object storage are extras, so an AVEL user does
not carry their ~1 GB. Code that needs an extra calls ``require(extra, what)`` before its first import of
it: a plain ``ModuleNotFoundError: No module named 'ray'`` would not say that an extra exists, nor which.
Base layer: imports nothing of the package, and checks without importing (``find_spec``), so a check costs
microseconds and the heavy import still happens only where it is used.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Extra:
    modules: tuple[str, ...]
    """Top-level modules that must be importable (the extra's distributions, as imported)."""
    brings: str
    """What it installs, for the message."""


EXTRAS: dict[str, Extra] = {
    "sweep": Extra(("ray",), "Ray Tune"),
    "text": Extra(("transformers", "tokenizers", "pycocoevalcap"), "transformers, tokenizers, pycocoevalcap"),
    "s3": Extra(("s3fs", "fsspec", "aiohttp"), "s3fs, fsspec, aiohttp for s3:// and http(s):// shards"),
    "trackers": Extra(("wandb", "mlflow"), "Weights & Biases and MLflow for train.loggers"),
}
"""Each extra of pyproject.toml that code checks for (``all`` and ``dev`` are unions of these, plus the test
tools); tests/test_install.py keeps this table and pyproject's extras in step."""

DISTRIBUTION = "avpea-dist"


class MissingExtra(ImportError):
    """A command needs an optional part of the install that is not there; the message is the fix."""

    def __init__(self, extra: str, what: str, missing: list[str]):
        self.extra, self.what, self.missing = extra, what, missing
        super().__init__(f"{what} needs the [{extra}] extra ({EXTRAS[extra].brings}); not installed: "
                         f"{', '.join(missing)}. Install it with: {install_line(extra)}")


def install_line(extra: str) -> str:
    """The pip line that adds ``extra`` (from a checkout the same extra installs with ``pip install -e '.[x]'``)."""
    return f"pip install '{DISTRIBUTION}[{extra}]'  (from a checkout: pip install -e '.[{extra}]')"


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here (empty when the extra is installed)."""
    if extra not in EXTRAS:
        raise KeyError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    return [m for m in EXTRAS[extra].modules if not _findable(m)]


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or blocked package counts as missing
        return False


def require(extra: str, what: str) -> None:
    """Raise ``MissingExtra`` naming the pip line unless every module of ``extra`` is importable.
    ``what`` names the command or feature for the message (``'avpea sweep'``, ``'the retrieval task'``)."""
    gone = missing(extra)
    if gone:
        raise MissingExtra(extra, what, gone)
