"""What a run folder keeps of its shards, so the run stays usable when they are gone (``apps.runmodel.load_run``).

Rank 0 copies the shards' description (``data.manifest.describe``: the manifest without its per-shard and
per-skip lists) to ``RUN/shards_manifest.json`` and their text folder (tokenizer + small
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
    from ..datasets.valor.textmodel import shards_text_folder

    target = Path(run_dir) / RUN_TEXT
    if not (manifest.get("text") or {}).get("folder") or target.is_dir():
        return
    source = shards_text_folder(shards, manifest)  # remote shards: the node cache's copy
    if source is None or not source.is_dir():
        return
    tmp = Path(tempfile.mkdtemp(prefix=f".{RUN_TEXT}.", dir=run_dir))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_run_manifest(run_dir: str | Path | None, shards: str | Path | None) -> tuple[dict[str, Any] | None, str]:
    """The training shards' description (``data.manifest.describe``) as the run saw it, and where it came
    from: the run folder's copy (``RUN/shards_manifest.json``; its text folder then ``RUN/shards_text``,
    absolute), else the shards' own
    (``data.shards``, when reachable from here); ``(None, why)`` when neither is there (a run trained on
    in-memory batches, or a run folder moved without its copy). A damaged copy is an error, never skipped:
    the shards may since have been rebuilt with other classes. The one reader of predict, search, caption,
    eval and export."""
    import json

    from ..data.manifest import describe, read_description

    copy = Path(run_dir) / RUN_MANIFEST if run_dir is not None else None
    if copy is not None and copy.is_file():
        try:
            manifest = json.loads(copy.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{copy} is not readable JSON ({e}); the run folder is damaged: copy it again "
                             f"from where it was trained") from None
        if not isinstance(manifest, dict):
            raise ValueError(f"{copy} does not hold a manifest (a JSON object); copy the run folder again")
        manifest = describe(manifest)  # runs before the description existed copied the whole manifest
        text = Path(run_dir) / RUN_TEXT
        if manifest.get("text") and text.is_dir():  # an absolute folder wins over the shards folder's
            manifest["text"] = {**manifest["text"], "folder": str(text.resolve())}
        return manifest, str(copy)
    where = f"no {RUN_MANIFEST} in {run_dir}, and " if run_dir is not None else ""
    if shards is None or str(shards) == "":
        return None, f"{where}no data.shards"
    try:
        return read_description(shards), str(shards)
    except (OSError, ValueError) as e:
        return None, f"{where}{str(e).split(';')[0]}"
