"""The start of a run, before the first step: every path of the config made absolute, determinism, which
checkpoint to resume (decided by rank 0 for every rank), and the run folder's config.yaml and run.json."""

from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..runtime import world as avdist
from ..runtime.software import git_revision
from ..config import Config, ConfigError, RefusedOnRankZero
from ..config_load import config_from_dict, dump_yaml
from .. import storage
from ..fileio import atomic_write_json, atomic_write_text
from .checkpoint import find_resumable, read_manifest, tag_for, verify
from .engine import resolve_precision
from .elastic import CONSOLIDATED
from .resume import check_resume, elastic_problem, overridable_keys, saved_signature

log = logging.getLogger(__name__)


CORE_PATHS = {"data.shards": ("",), "train.out": ("",), "train.resume": ("latest", "none"),
              "model.pretrained": ("none", "timm")}
"""The shared settings that name a file or folder, each with its values that are keywords, never paths."""


def absolute_paths(cfg: Config) -> Config:
    """``cfg`` with every path it names made absolute (against the working folder, symlinks kept), so that
    the run folder's config.yaml works from any folder: the shared settings of ``CORE_PATHS`` always, and a
    task section's keys listed in its class's ``LOCAL_PATHS`` ({key: keywords}) when the value names an
    existing file or folder (otherwise it is a keyword or a hub name, e.g. 'bert-base-uncased')."""
    data = cfg.to_dict()
    for key, keywords in CORE_PATHS.items():
        section, name = key.split(".")
        value = data[section][name]
        if value not in keywords:
            data[section][name] = _absolute(value)
    for task, section in cfg.sections.items():
        for name, keywords in getattr(type(section), "LOCAL_PATHS", {}).items():
            value = data[task][name]
            if value not in keywords and os.path.exists(os.path.expanduser(value)):
                data[task][name] = _absolute(value)
    return config_from_dict(data)


def _absolute(path: str) -> str:
    if storage.is_url(path):  # s3:// and http(s):// shards are absolute already (and hold no secret)
        return storage.check_secret_free(path, "data.shards")
    return os.path.abspath(os.path.expanduser(path))


def set_determinism(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def _broadcast_int(value: int) -> int:
    t = torch.tensor([value], dtype=torch.int64, device=avdist.comm_device())
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast(t, src=0)
    return int(t.item())


def choose_resume(cfg: Config, ckpt_root: Path, rank: int, signature: dict[str, Any]) -> Path | None:
    """Rank 0 picks the checkpoint (so every rank loads the same one) and checks that the config may
    resume it, before anything is written; -1 means start afresh."""
    step, error = -1, ""
    if rank == 0:
        mode = cfg.train.resume
        if mode == "none":
            if find_resumable(ckpt_root)[0] is not None:
                error = (f"train.resume=none but '{ckpt_root}' holds checkpoints; choose a new train.out or "
                         f"resume with train.resume=latest")
        elif mode == "latest":
            folder, passed = find_resumable(ckpt_root)
            for reason in passed:
                log.warning("not resuming from %s", reason)
            step = int(folder.name.split("_")[1]) if folder else -1
        else:
            folder = Path(mode)
            problem = verify(folder) if folder.is_dir() else "no such folder"
            if problem:
                error = f"train.resume='{mode}' is not a usable checkpoint folder: {problem}"
            else:
                ckpt_root = folder.parent
                step = int(folder.name.split("_")[1])
        if step >= 0 and not error:
            error = _check_compatible(cfg, ckpt_root / tag_for(step), signature)
    failed = _broadcast_int(1 if error else 0)
    if failed:
        if error:
            raise ConfigError(error)
        raise RefusedOnRankZero("rank 0 refused to resume (its error line says why)")
    step = _broadcast_int(step)
    if step < 0:
        return None
    return (ckpt_root if cfg.train.resume in ("latest", "none") else Path(cfg.train.resume).parent) / tag_for(step)


def _check_compatible(cfg: Config, folder: Path, signature: dict[str, Any]) -> str:
    saved = saved_signature(read_manifest(folder) or {}, Path(cfg.train.out))
    try:
        accepted = check_resume(saved, signature, cfg.train.allow_resume_changes, folder, overridable_keys(cfg))
    except ConfigError as e:
        return str(e)
    problem = elastic_problem(saved, signature, folder, CONSOLIDATED)
    if problem:
        return problem
    if accepted:
        log.warning("resuming %s with %s (allowed by train.allow_resume_changes): the run now differs from an "
                    "uninterrupted one", folder, "; ".join(accepted))
    return ""


def write_run_files(cfg: Config, run_dir: Path, world: avdist.WorldInfo, backend: str,
                     weights: dict[str, Any], steps: int) -> None:
    old = run_dir / "config.yaml"
    text = dump_yaml(cfg)
    if old.is_file() and old.read_text() != text:
        atomic_write_text(run_dir / "config.previous.yaml", old.read_text())
        log.warning("the config differs from the one this run folder was started with (kept as "
                    "config.previous.yaml); a resumed run is exact only with the same config")
    atomic_write_text(old, text)
    from ..compat.deepspeed import load

    deepspeed = load()
    atomic_write_json(run_dir / "run.json", {
        "git": git_revision(), "world_size": world.world_size, "backend": backend,
        "precision": resolve_precision(cfg.dist.precision), "torch": torch.__version__,
        "deepspeed": deepspeed.__version__, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "steps": steps, "backbone_weights": weights})  # carries the loud warning when the backbone is random-init


