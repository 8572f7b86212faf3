"""What a run folder keeps of its shards, so the run stays usable when they are gone (``apps.runmodel.load_run``).

Rank 0 copies the shards' manifest to ``RUN/shards_manifest.json`` and their text folder (tokenizer + small
text model, for retrieval and captioning shards) to ``RUN/shards_text`` at the start of a run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

RUN_MANIFEST = "shards_manifest.json"
"""The training shards' manifest, copied into the run folder by rank 0 at the start of a run."""
RUN_TEXT = "shards_text"
"""The shards' text folder (tokenizer + small text model, when the manifest names one), copied beside it."""


def copy_text_folder(shards: str | Path, manifest: dict[str, Any], run_dir: str | Path) -> None:
    """The shards' text folder (``manifest['text']['folder']``) to ``RUN/shards_text``, atomically (a
    temporary folder renamed into place); a run folder that already holds it (a resumed run) keeps its copy.
    Nothing to do for shards without one (AVEL, AVQA)."""
    folder = (manifest.get("text") or {}).get("folder")
    source, target = Path(shards) / str(folder or ""), Path(run_dir) / RUN_TEXT
    if not folder or not source.is_dir() or target.is_dir():
        return
    tmp = Path(tempfile.mkdtemp(prefix=f".{RUN_TEXT}.", dir=run_dir))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
