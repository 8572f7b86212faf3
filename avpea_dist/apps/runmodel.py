"""Using a finished run: its model back (``load_run``) and a new video as the model's input
(``media_from_video``), for `avpea predict` (AVEL), `avpea search` (retrieval) and `avpea caption`.

A run folder (``train.out``) holds ``config.yaml``, ``best/`` and ``final/adapters.safetensors`` and a copy
of the training shards' manifest (``shards_manifest.json``) and of their text folder (``shards_text/``, for
retrieval and captioning shards), so a run keeps working when its shards are gone: the task is rebuilt from
that manifest (class names, vocabulary, text model folder, preprocessing).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..train.runfolder import RUN_MANIFEST, RUN_TEXT

if TYPE_CHECKING:
    import torch

    from ..config import Config
    from ..models.model import AVPEAModel
    from ..tasks.base import Task

log = logging.getLogger(__name__)


def run_manifest(run_dir: str | Path | None, cfg: "Config") -> dict[str, Any] | None:
    """The shards' manifest of a run: the shards folder's own when it is readable, else the run folder's
    copy; None when neither is there (a run trained on in-memory batches)."""
    from ..data.manifest import read_manifest

    try:
        return read_manifest(cfg.data.shards)
    except (OSError, ValueError) as e:
        copy = Path(run_dir) / RUN_MANIFEST if run_dir is not None else None
        if copy is not None and copy.is_file():
            manifest = json.loads(copy.read_text())
            text = Path(run_dir) / RUN_TEXT
            if manifest.get("text") and text.is_dir():  # an absolute folder wins over the gone shards folder
                manifest["text"] = {**manifest["text"], "folder": str(text.resolve())}
            return manifest
        log.warning("no shard manifest for this run (%s)", str(e).split(";")[0])
        return None


def export_path(run_dir: str | Path, which: str = "best") -> Path:
    """RUN/<which>/adapters.safetensors; 'best' falls back to 'final' for a run that never validated."""
    run_dir = Path(run_dir)
    if which not in ("best", "final"):
        raise ValueError(f"which={which!r}: choose 'best' or 'final'")
    for name in (which, "final") if which == "best" else (which,):
        if (run_dir / name / "adapters.safetensors").is_file():
            return run_dir / name / "adapters.safetensors"
    raise FileNotFoundError(f"'{run_dir}' holds no exported model ({which}/adapters.safetensors): the run has not "
                            f"validated yet; train it further")


def load_run(run_dir: str | Path, which: str = "best", *, device: str = "cpu",
             overrides: list[str] | tuple[str, ...] = ()) -> tuple["Config", "Task", "AVPEAModel"]:
    """A run folder -> (its config (plus ``overrides``), its task (built from the shards' manifest), its
    model with the ``which`` export loaded, in eval mode on ``device``)."""
    import torch

    from ..config_load import load_config
    from ..models.model import build_model
    from ..tasks.registry import build_task
    from ..train.export import load_trainable

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"'{run_dir}' is not a run folder (no config.yaml); pass the train.out of a run")
    checkpoint = export_path(run_dir, which)
    cfg = load_config(run_dir / "config.yaml", list(overrides))
    task = build_task(cfg, run_manifest(run_dir, cfg))
    torch.manual_seed(cfg.train.seed)  # a random-init frozen backbone is rebuilt exactly as training built it
    model = build_model(cfg.model, task=task)
    load_trainable(model, checkpoint, cfg.model, task.signature())
    model.to(device).eval()
    return cfg, task, model


def build_options(cfg: "Config", manifest: dict[str, Any] | None) -> Any:
    """The shard build's options as the run's shards were made (``manifest['preprocessing']``), for one video
    of any length (no minimum duration)."""
    from ..data.build import BuildOptions

    prep = dict((manifest or {}).get("preprocessing") or {})
    prep.setdefault("frame_size", cfg.model.img_size)
    fields = {f.name for f in dataclasses.fields(BuildOptions)}
    given = {k: v for k, v in prep.items() if k in fields and k not in ("workers", "min_seconds")}
    return BuildOptions(**given, min_seconds=0.0)


def media_from_video(path: str | Path, cfg: "Config", manifest: dict[str, Any] | None = None,
                     run_dir: str | Path | None = None) -> tuple["torch.Tensor", "torch.Tensor"]:
    """A video -> (frames uint8 (T, 3, S, S), audio float32 (T, mel, frames) normalised): one clip of the
    model's T segments, through the very functions that built the run's shards (the segment sampling
    and preprocessing recorded in their manifest) and the loader's decoding. Raises ``DecodeError``."""
    import numpy as np
    import torch

    from ..data.build import encode_video
    from ..data.decode import DecodeError
    from ..data.features import load_npy, normalise_fbank
    from ..data.manifest import FRAME_MEMBERS
    from ..data.stream import decode_jpeg

    if manifest is None:
        manifest = run_manifest(run_dir, cfg)
    opts = build_options(cfg, manifest)
    status, members = encode_video(str(path), opts)
    if status != "ok":
        raise DecodeError(str(members))
    frames = np.stack([decode_jpeg(members[name], opts.frame_size, cfg.model.img_size) for name in FRAME_MEMBERS])
    audio = normalise_fbank(load_npy(members["fbank.npy"]))
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(np.ascontiguousarray(audio))
