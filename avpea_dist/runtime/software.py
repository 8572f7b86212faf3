"""What software produced a result: ``software_record()`` for result.json, model cards and sweep reports.

A result that moves by a point between two machines is only explainable when each says what it ran on:
Python, the packages the numbers depend on (torch, deepspeed, timm, webdataset, transformers...), the CUDA
build and GPU when there is one, and this project's version and git commit when it runs from a checkout.
Package versions come from the installed distributions' metadata, so recording them imports none of them
(deepspeed's import alone takes seconds); torch is asked for its CUDA build only when already imported.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "deepspeed", "timm", "webdataset", "transformers", "tokenizers", "huggingface_hub",
            "safetensors", "av", "numpy", "torchaudio")
"""Distributions whose versions are recorded ('not installed' when absent: that is information too)."""

PROJECT = "avpea-dist"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


@lru_cache(maxsize=1)
def git_revision() -> dict[str, Any]:
    """{"commit", "dirty"} of the checkout this package runs from; {"commit": "unknown (...)"} elsewhere (an
    installed wheel, no git). A checkout of another project around an installed copy is not ours: the
    top-level folder must hold this package."""
    try:
        top = subprocess.run(["git", "-C", str(PACKAGE_DIR), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        if Path(top).resolve() != PACKAGE_DIR.parent:
            return {"commit": "unknown (not a git checkout)", "dirty": None}
        rev = subprocess.run(["git", "-C", top, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", top, "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return {"commit": rev, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown (not a git checkout)", "dirty": None}


def cuda_record() -> dict[str, Any]:
    """CUDA build and the first GPU's name, from an already imported torch; {} when torch is not loaded."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    out: dict[str, Any] = {"cuda": torch.version.cuda}  # None for a CPU build
    try:
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
            out["gpus"] = torch.cuda.device_count()
    except Exception:  # noqa: BLE001  (a broken driver must not cost the result it describes)
        out["gpu"] = "unavailable (driver error)"
    return out


def software_record() -> dict[str, Any]:
    """``{"python", "platform", "avpea_dist", "git", "packages": {name: version}, "cuda"?, "gpu"?}``: plain JSON."""
    return {"python": platform.python_version(), "platform": platform.platform(terse=True),
            PROJECT.replace("-", "_"): package_version(PROJECT), "git": git_revision(),
            "packages": {name: package_version(name) for name in PACKAGES}, **cuda_record()}


def software_lines(record: dict[str, Any]) -> list[str]:
    """The record as short Markdown list lines (model cards, sweep reports)."""
    git = record.get("git") or {}
    commit = git.get("commit", "unknown")
    if git.get("dirty"):
        commit += " (with uncommitted changes)"
    lines = [f"- Python {record.get('python')} on {record.get('platform')}",
             f"- avpea-dist {record.get('avpea_dist')}, git {commit}"]
    lines += [f"- {name} {v}" for name, v in (record.get("packages") or {}).items() if v != "not installed"]
    if "cuda" in record:
        lines.append(f"- torch's CUDA build: {record['cuda'] or 'none (CPU build)'}; GPU: {record.get('gpu', 'none used')}")
    return lines
