"""The model as an artefact: a folder in the Hugging Face layout, and the model rebuilt from it.

``avpea export --run RUN --out DIR`` (and every finished training run, as ``RUN/model/``) writes:

    DIR/config.json        task, backbone (name, weight source, included or not), the model's structure, label
                           names / vocabularies (the shards' manifest without its shard lists), preprocessing,
                           the task's bound settings (signature), the whole training config, software
    DIR/model.safetensors  the trainable tensors (adapters, head, trained text weights); with --with-backbone
                           every tensor of the model, the frozen backbone included
    DIR/text/              the shards' text folder (tokenizer + small text model) of a text task
    DIR/text_models/KEY/   a text model folder a task setting names (retrieval.text_model, captioning.decoder)
    DIR/train_config.yaml  the config it was trained with
    DIR/README.md          the model card

``AVPEAModel.from_pretrained(DIR or hub id)`` (``models/model.py``, huggingface_hub's mixin) reads it back
through ``load_folder`` here. The task is found by name in the plug-in registry, so this module knows no task.
The export records everything its compatibility depends on: loading it with another backbone or another
preprocessing is one error naming both (``check_compatible``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import Config, ModelConfig
from ..config_load import config_from_dict, parse_override
from ..fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

FORMAT = "avpea-model-v1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
TRAIN_CONFIG = "train_config.yaml"
TEXT_DIR = "text"
TEXT_MODELS_DIR = "text_models"

MODEL_MUST_MATCH = ("backbone", "img_size", "mel_bins", "audio_frames", "num_segments", "modalities", "adapters",
                    "bottleneck", "adapter_placement", "adapter_gate", "adapter_heads", "adapter_norm",
                    "adapter_activation", "train_backbone_norms")
"""The model settings an export is bound to: the frozen backbone, the input sizes, the adapters' structure."""
PREPROCESSING_MUST_MATCH = ("frame_size", "sample_rate", "mel_bins", "fbank_frames", "jpeg_quality", "segments",
                            "audio_windows", "sampling")
"""The shards' preprocessing entries a model is bound to (``data.build.preprocessing``), where both sides say."""


@dataclass
class Exported:
    """What a model loaded from an export folder knows of it (``model.exported``)."""

    folder: Path
    config: dict[str, Any]
    """config.json as written."""
    run_config: Config
    """The training config with its paths pointing into ``folder`` (text folders, data.shards)."""
    task: Any
    """The task (``tasks.base.Task``) rebuilt from the export's manifest."""
    manifest: dict[str, Any] | None
    """The shards' manifest as the run saw it (without shard lists), text folder inside ``folder``."""


# ---------------------------------------------------------------------------------------------
# Writing


def is_export(folder: str | Path) -> bool:
    path = Path(folder) / CONFIG_NAME
    try:
        return path.is_file() and json.loads(path.read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def write_folder(out: str | Path, config: dict[str, Any], tensors: dict[str, torch.Tensor], card: str,
                 folders: dict[str, Path] | None = None, files: dict[str, str] | None = None) -> Path:
    """Write an export folder as a whole: built beside ``out`` under a temporary name, then renamed into
    place (a previous export there is replaced only once the new one is complete). ``folders``: {name in
    the export: folder to copy}; ``files``: {name: text}. A non-empty ``out`` that is not an export is
    refused (nothing of it is touched)."""
    from safetensors.torch import save

    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_export(out))):
        raise FileExistsError(f"--out {out} exists and is not an avpea model folder; give a new or empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    old = None
    try:
        meta = {"format": FORMAT, "task": str(config.get("task"))}
        atomic_write_bytes(tmp / WEIGHTS_NAME, save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta))
        for name, source in (folders or {}).items():
            shutil.copytree(source, tmp / name, symlinks=False)  # a hub cache's symlinks become files
        for name, text in (files or {}).items():
            atomic_write_text(tmp / name, text)
        atomic_write_text(tmp / CARD_NAME, card)
        atomic_write_json(tmp / CONFIG_NAME, config)  # last: a folder with config.json is complete
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out


def slim_manifest(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """The manifest without its shard lists (names, sizes, hashes): what a model needs is its classes,
    vocabulary, text folder and preprocessing; the per-split counts stay as a record of the data."""
    if manifest is None:
        return None
    out = {k: v for k, v in manifest.items() if k != "splits"}
    out["splits"] = {name: {k: v for k, v in (entry or {}).items() if k != "shards"}
                     for name, entry in (manifest.get("splits") or {}).items()}
    return out


def preprocessing_record(model_cfg: ModelConfig, manifest: dict[str, Any] | None) -> dict[str, Any]:
    """The inputs the model expects: its own sizes, then the shards' preprocessing (frame size, audio...)."""
    own = {k: getattr(model_cfg, k) for k in ("img_size", "mel_bins", "audio_frames", "num_segments")}
    return {**own, **((manifest or {}).get("preprocessing") or {})}


# ---------------------------------------------------------------------------------------------
# Compatibility


def check_compatible(saved: dict[str, Any], where: str, *, model: ModelConfig | None = None,
                     preprocessing: dict[str, Any] | None = None, other: str = "the given settings") -> None:
    """One ValueError naming both sides when ``model`` (another model config) or ``preprocessing`` (another
    shard set's, e.g. the shards an export is evaluated on) differs from the export's on what it is bound to."""
    wrong = []
    if model is not None:
        mine = saved.get("model") or {}
        wrong += [f"model.{k}: {mine[k]!r} in the export, {getattr(model, k)!r} in {other}" for k in MODEL_MUST_MATCH
                  if k in mine and mine[k] != getattr(model, k)]
    if preprocessing is not None:
        mine = saved.get("preprocessing") or {}
        # shards written before 'sampling' was recorded took the first segments
        fill = {"sampling": "first"}
        wrong += [f"preprocessing.{k}: {mine.get(k, fill.get(k))!r} in the export, "
                  f"{preprocessing.get(k, fill.get(k))!r} in {other}" for k in PREPROCESSING_MUST_MATCH
                  if (k in mine or k in fill) and (k in preprocessing or k in fill)
                  and mine.get(k, fill.get(k)) != preprocessing.get(k, fill.get(k))]
    if wrong:
        backbone = (saved.get("backbone") or {}).get("name")
        raise ValueError(f"the model in {where} (backbone {backbone}) does not fit {other}: {'; '.join(wrong)}. "
                         f"Use the settings it was trained with, or a model exported from a run that used "
                         f"these")


# ---------------------------------------------------------------------------------------------
# Reading


def read_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no {CONFIG_NAME}: not an avpea model folder (write one with "
                                f"`avpea export --run RUN --out DIR`)")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not readable JSON ({e}); export the model again") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{path} is not an avpea model config (no format '{FORMAT}'): a model of another "
                         f"library, or of another version of this one")
    return config


def rebuilt_config(folder: Path, saved: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()
                   ) -> tuple[Config, dict[str, Any] | None]:
    """The training config and manifest with their paths pointing into ``folder``; ``overrides`` (dotted
    settings) applied, and checked against what the export is bound to."""
    data = json.loads(json.dumps(saved["run_config"]))
    data.setdefault("data", {})["shards"] = str(folder)  # what the tasks resolve 'shards' text folders against
    for key, rel in (saved.get("relocated") or {}).items():
        section, name = key.split(".", 1)
        data[section][name] = str((folder / rel).resolve())
    for text in overrides:
        key, value = parse_override(text)
        section, _, name = key.partition(".")
        data.setdefault(section, {})[name] = value
    cfg = config_from_dict(data)
    if overrides:
        check_compatible(saved, str(folder), model=cfg.model, other="the overrides " + " ".join(overrides))
    manifest = saved.get("manifest")
    if manifest is not None:
        manifest = dict(manifest)
        if (folder / TEXT_DIR).is_dir():
            manifest["text"] = {**(manifest.get("text") or {}), "folder": str((folder / TEXT_DIR).resolve())}
    return cfg, manifest


def build_task(cfg: Config, manifest: dict[str, Any] | None) -> Any:
    """The task of ``cfg`` from the plug-in registry (by name: this layer imports no task)."""
    from ..plugins import task_spec

    return task_spec(cfg.task).task_class()(cfg, manifest)


def load_folder(cls: type, folder: str | Path, *, device: str = "cpu", overrides: list[str] | tuple[str, ...] = (),
                backbone_weights: str | None = None) -> Any:
    """An export folder -> ``cls`` (``AVPEAModel``) with its weights, in eval mode on ``device``, with
    ``model.exported`` (an ``Exported``). ``backbone_weights``: where the frozen backbone comes from when
    the export does not include it ('timm', a local file; default: the source it was trained with)."""
    folder = Path(folder)
    saved = read_config(folder)
    cfg, manifest = rebuilt_config(folder, saved, overrides)
    backbone = saved.get("backbone") or {}
    if backbone_weights is not None:
        cfg.model.pretrained = backbone_weights
    task = build_task(cfg, manifest)
    relocated = set(saved.get("relocated") or {})
    bound = saved.get("signature") or {}
    wrong = [f"{k}: {bound[k]!r} in the export, {v!r} here" for k, v in task.signature().items()
             if k in bound and k not in relocated and bound[k] != v]
    if wrong:
        raise ValueError(f"the model in {folder} was trained with other task settings ({'; '.join(wrong)}); "
                         f"load it without those overrides")
    tensors = read_tensors(folder / WEIGHTS_NAME)
    torch.manual_seed(cfg.train.seed)  # a random-init frozen backbone is rebuilt exactly as training built it
    model = cls(cfg.model, task.build_head)
    if backbone.get("included"):
        model.weights_report = {"source": str(folder / WEIGHTS_NAME)}
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{folder / WEIGHTS_NAME} does not fit the model its config describes: "
                             f"{str(e).splitlines()[0]}") from None
    else:
        if cfg.model.pretrained not in ("none", "timm") and not Path(cfg.model.pretrained).is_file():
            raise FileNotFoundError(f"the model in {folder} was trained on the backbone weights "
                                    f"{cfg.model.pretrained}, which are not here; pass their new place "
                                    f"(backbone_weights=, --backbone-weights) or export with --with-backbone")
        model.load_pretrained()
        load_trainable_tensors(model, tensors, folder / WEIGHTS_NAME)
    model.to(device).eval()
    model.exported = Exported(folder, saved, cfg, task, manifest)
    return model


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the model folder is incomplete; export it again")
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001  (safetensors raises its own types for a bad header)
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from None


def load_trainable_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
    """Every trainable tensor of ``model`` from ``tensors``, nothing missing and nothing extra."""
    expected = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{where} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for n, p in expected.items():
            if tensors[n].shape != p.shape:
                raise ValueError(f"{where}: '{n}' has shape {tuple(tensors[n].shape)}, the model expects "
                                 f"{tuple(p.shape)}")
            p.copy_(tensors[n].to(p.dtype))


def resolve_folder(model_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None,
                   force_download: bool = False, local_files_only: bool = False, token: str | bool | None = None
                   ) -> Path:
    """A local export folder as it is; a hub id -> its snapshot folder (downloaded into the Hugging Face cache
    where the hub is reachable, from the cache alone with ``local_files_only`` or HF_HUB_OFFLINE=1)."""
    if os.path.isdir(model_id):
        return Path(model_id)
    if model_id.startswith((".", "/", "~")) or model_id.count("/") > 1 or os.sep in model_id.replace("/", ""):
        raise FileNotFoundError(f"model folder {model_id} does not exist; give an export folder (`avpea export`) "
                                f"or a hub id such as user/avpea-avel")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=model_id, revision=revision, cache_dir=cache_dir,
                                      force_download=force_download, local_files_only=local_files_only,
                                      token=token))
    except Exception as e:  # noqa: BLE001  (offline, missing repo, no access: one line with the way out)
        raise FileNotFoundError(f"model {model_id!r} is neither a local folder nor reachable on the Hugging Face "
                                f"hub ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); give an "
                                f"export folder, or fetch it once where there is network") from None


def save_loaded(model: Any, out: Path) -> None:
    """``save_pretrained`` of a model loaded from an export: the same folder with the model's current
    tensors (trainable ones, or all when the export included the backbone)."""
    exported: Exported | None = getattr(model, "exported", None)
    if exported is None:
        raise ValueError("save_pretrained needs a model loaded with from_pretrained; export a training run with "
                         "`avpea export --run RUN --out DIR` (or train.export.export_run)")
    src = exported.folder
    if Path(out).resolve() == src.resolve():
        raise ValueError(f"save_pretrained into the folder it was loaded from ({src}); give another folder")
    included = (exported.config.get("backbone") or {}).get("included")
    tensors = {n: t.detach().cpu() for n, t in model.state_dict().items()} if included else \
        {n: p.detach().to("cpu", torch.float32) for n, p in model.named_parameters() if p.requires_grad}
    folders = {name: src / name for name in (TEXT_DIR, TEXT_MODELS_DIR) if (src / name).is_dir()}
    files = {name: (src / name).read_text() for name in (TRAIN_CONFIG,) if (src / name).is_file()}
    card = (src / CARD_NAME).read_text() if (src / CARD_NAME).is_file() else ""
    write_folder(out, exported.config, tensors, card, folders, files)
