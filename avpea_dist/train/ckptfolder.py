"""Finding checkpoints under ``RUN/checkpoints``: their tags, manifests, and which are complete (see
checkpoint.py for the layout)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..fileio import sha256_file

_TAG = re.compile(r"^step_(\d{8})$")
MANIFEST = "manifest.json"


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def list_tags(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _TAG.match(p.name))]
    return sorted(out)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None


def verify(folder: Path) -> str | None:
    """None when ``folder`` is a complete checkpoint whose files all match their hashes; else why not."""
    manifest = read_manifest(folder)
    if manifest is None:
        return "no readable manifest.json (the save did not finish)"
    for name, digest in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            return f"'{name}' is missing"
        if sha256_file(path) != digest:
            return f"'{name}' does not match its sha256 in the manifest (corrupted after the save)"
    return None


def find_resumable(root: Path) -> tuple[Path | None, list[str]]:
    """The newest complete, hash-verified checkpoint under ``root`` and the reasons others were passed over."""
    skipped = []
    for _, folder in reversed(list_tags(root)):
        problem = verify(folder)
        if problem is None:
            return folder, skipped
        skipped.append(f"{folder.name}: {problem}")
    return None, skipped


def complete_tags(root: Path) -> list[tuple[int, Path]]:
    return [(s, p) for s, p in list_tags(root) if read_manifest(p) is not None]
