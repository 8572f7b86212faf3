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
    """The manifest of the shards a run trained on, for what needs no training data (class names,
    vocabulary, text model, preprocessing): the run folder's copy (``RUN/shards_manifest.json``, written at
    the start of the run; its text folder then ``RUN/shards_text``), so the run answers the same from any
    folder and after its shards moved; for a run folder without a copy (older runs), the shards folder's
    own when readable; None when neither is there (a run trained on in-memory batches)."""
    from ..data.manifest import read_manifest

    copy = Path(run_dir) / RUN_MANIFEST if run_dir is not None else None
    if copy is not None and copy.is_file():
        try:
            manifest = json.loads(copy.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{copy} is not readable JSON ({e}); the run folder is damaged: copy it again "
                             f"from where it was trained") from None
        text = Path(run_dir) / RUN_TEXT
        if manifest.get("text") and text.is_dir():  # an absolute folder wins over the shards folder's
            manifest["text"] = {**manifest["text"], "folder": str(text.resolve())}
        return manifest
    try:
        return read_manifest(cfg.data.shards)
    except (OSError, ValueError) as e:
        log.warning("no shard manifest for this run (%s)", str(e).split(";")[0])
        return None


def run_folder_of(config: str | Path) -> Path | None:
    """The run folder a config file lies in (``RUN/config.yaml`` beside ``RUN/shards_manifest.json``), else None."""
    folder = Path(config).parent
    return folder if (folder / "config.yaml").is_file() and (folder / RUN_MANIFEST).is_file() else None


def manifest_for_config(config: str | Path, cfg: "Config") -> dict[str, Any] | None:
    """``run_manifest`` for a command given a config file rather than a run folder (``avpea predict --config
    RUN/config.yaml``): the copy of the run folder holding ``config`` when it is one, else the shards' own."""
    return run_manifest(run_folder_of(config), cfg)


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
             overrides: list[str] | tuple[str, ...] = (), task: str | None = None
             ) -> tuple["Config", "Task", "AVPEAModel"]:
    """A run folder -> (its config (plus ``overrides``), its task (built from ``run_manifest``: the run
    folder's copy of the shards' manifest), its model with the ``which`` export loaded, in eval mode on
    ``device``). ``task``: the task the calling command needs (checked before any model is built)."""
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
    if task is not None and cfg.task != task:
        raise ValueError(f"'{run_dir}' is a run of task {cfg.task}; this command needs a run trained with "
                         f"task: {task}")
    task_obj = build_task(cfg, run_manifest(run_dir, cfg))
    torch.manual_seed(cfg.train.seed)  # a random-init frozen backbone is rebuilt exactly as training built it
    model = build_model(cfg.model, task=task_obj)
    load_trainable(model, checkpoint, cfg.model, task_obj.signature())
    model.to(device).eval()
    return cfg, task_obj, model


def build_options(cfg: "Config", manifest: dict[str, Any] | None) -> Any:
    """The shard build's options as the run's shards were made (``manifest['preprocessing']``), for one video
    of any length (no minimum duration)."""
    from ..data.build import BuildOptions

    prep = dict((manifest or {}).get("preprocessing") or {})
    prep.setdefault("frame_size", cfg.model.img_size)
    if cfg.model.modalities == "visual":  # the model never hears the audio: a silent video is as good
        prep["no_audio"] = "silence"
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
        if opts.no_audio == "skip" and _silent(path):  # the decoder's advice names a build option
            raise DecodeError(f"no audio stream: this run's model hears audio (model.modalities="
                              f"{cfg.model.modalities}) and its shards kept no silent clip; give the video "
                              f"with its sound track")
        raise DecodeError(str(members))
    frames = np.stack([decode_jpeg(members[name], opts.frame_size, cfg.model.img_size) for name in FRAME_MEMBERS])
    audio = normalise_fbank(load_npy(members["fbank.npy"]))
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(np.ascontiguousarray(audio))


def _silent(path: str | Path) -> bool:
    """True when ``path`` is a video without an audio stream."""
    from ..data.decode import open_input

    try:
        with open_input(path) as container:
            return bool(container.streams.video) and not container.streams.audio
    except Exception:  # noqa: BLE001  (unreadable: the decoder's own reason stands)
        return False
