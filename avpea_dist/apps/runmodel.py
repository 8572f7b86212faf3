"""Using a trained model: from a run folder (``load_run``) or a model folder / hub id (``load_model``, the
``--model`` of the commands; ``models/pretrained.py``), and a new video as the model's input
(``media_from_video``), for `avpea predict` (AVEL), `avpea search` (retrieval) and `avpea caption`.

A run folder (``train.out``) holds ``config.yaml``, ``best/`` and ``final/adapters.safetensors`` and a copy
of the training shards' manifest (``shards_manifest.json``) and of their text folder (``shards_text/``, for
retrieval and captioning shards), so a run keeps working when its shards are gone: the task is rebuilt from
that manifest (class names, vocabulary, text model folder, preprocessing).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..train.runfolder import RUN_MANIFEST, read_run_manifest

if TYPE_CHECKING:
    import torch

    from ..config import Config
    from ..models.model import AVPEAModel
    from ..tasks.base import Task

log = logging.getLogger(__name__)


def run_manifest(run_dir: str | Path | None, cfg: "Config") -> dict[str, Any] | None:
    """The manifest of the shards a run trained on, for what needs no training data (class names,
    vocabulary, text model, preprocessing): ``train.runfolder.read_run_manifest`` (the run folder's copy,
    else the shards' own), with a warning saying why when there is neither (a run trained on in-memory
    batches)."""
    manifest, source = read_run_manifest(run_dir, cfg.data.shards)
    if manifest is None:
        log.warning("no shard manifest for this run (%s)", source)
    return manifest


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
    from ..train.modelfolder import adapter_file

    return adapter_file(Path(run_dir), which)


@dataclass
class LoadedModel:
    """A trained model ready to use, from a run folder (``--run``) or a model folder (``--model``)."""

    cfg: "Config"
    task: "Task"
    model: "AVPEAModel"
    manifest: dict[str, Any] | None
    weights: Path
    """The file holding its trained tensors (its hash keys caches such as search indexes)."""
    home: Path | None
    """Where outputs go by default: the run folder; None for a model folder (a new export replaces it whole)."""


def load_model(run: str | Path | None = None, model: str | Path | None = None, *, which: str = "best",
               device: str = "cpu", task: str | None = None, overrides: list[str] | tuple[str, ...] = ()
               ) -> LoadedModel:
    """``--run RUN`` or ``--model DIR_or_hub_id`` (exactly one) -> a ``LoadedModel`` in eval mode on
    ``device``. ``task``: the task the calling command needs (checked before the weights are read)."""
    if (run is None) == (model is None):
        raise ValueError("pass exactly one of --run RUN (a training run folder) or --model DIR (a model folder "
                         "written by `avpea export`, or a hub id)")
    if run is not None:
        cfg, task_obj, net = load_run(run, which, device=device, overrides=overrides, task=task)
        return LoadedModel(cfg, task_obj, net, run_manifest(run, cfg), export_path(run, which), Path(run))
    from ..models.model import AVPEAModel
    from ..models.pretrained import WEIGHTS_NAME, read_config, resolve_folder

    folder = resolve_folder(str(model))
    saved = read_config(folder)
    if task is not None and saved.get("task") != task:
        raise ValueError(f"'{model}' is a model of task {saved.get('task')}; this command needs a model trained "
                         f"with task: {task}")
    net = AVPEAModel.from_pretrained(str(folder), device=device, overrides=list(overrides))
    ex = net.exported
    return LoadedModel(ex.run_config, ex.task, net, ex.manifest, folder / WEIGHTS_NAME, None)


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
