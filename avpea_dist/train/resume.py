"""Which config changes a resume accepts, refuses, or accepts only when the user says so.

Every checkpoint's manifest records the settings that bind it (``resume_signature``). On a rerun, rank 0
compares them with the current config before any file is written:

* the model's structure and the resolved precision are *fixed*: the checkpoint cannot be loaded
  otherwise. Refused; the way out is the old value or a new ``train.out``.
* the world size and the ZeRO stage (``ELASTIC``) may change freely: the checkpoint's consolidated
  trainable state is re-partitioned (``elastic.py``) and the run's log says the world changed. A checkpoint
  written before that copy existed is refused at another world size or stage (``elastic_problem``).
* settings that change the data order, the batches, the inputs or the objective (``RESUME_OVERRIDABLE``,
  the shards' content among them) break the exact continuation. Refused unless named in
  ``train.allow_resume_changes``; then resumed with a warning.
* everything else follows the current config: learning rates, warm-up, decay floor, the run length
  (``train.steps`` / ``train.epochs``), AdamW's betas/eps/weight decay, clipping, evaluation and
  checkpoint cadence. The schedule's position (its step) comes from the checkpoint, its shape from the
  config (see ``checkpoint.load_checkpoint``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..config import RESUME_OVERRIDABLE, Config, ConfigError
from ..config_load import config_from_dict
from ..plugins import task_spec
from .engine import resolve_precision

ELASTIC = ("world_size", "dist.zero_stage")
"""Recorded in every signature, accepted when they change (the load re-partitions the state)."""

MODEL_FIXED = ("backbone", "modalities", "adapters", "bottleneck", "adapter_placement", "adapter_gate",
               "adapter_heads", "adapter_norm", "train_backbone_norms")
"""The shared encoder's settings a checkpoint is bound to; the task adds its head's (``Task.signature``)."""


def data_fingerprint(manifest: dict[str, Any] | None) -> str | None:
    """A short hash of every shard's name and sha256 (``data.manifest.shards_fingerprint``; a description
    carries it): the data, wherever the folder lies."""
    from ..data.manifest import shards_fingerprint

    return shards_fingerprint(manifest) if manifest else None


def _setting(cfg: Config, name: str) -> Any:
    section, key = name.split(".")
    return getattr(getattr(cfg, section), key)


def overridable_keys(cfg: Config) -> tuple[str, ...]:
    """The settings ``train.allow_resume_changes`` may name: the shared ones and the run's task's own."""
    return RESUME_OVERRIDABLE + task_spec(cfg.task).resume_overridable


def resume_signature(cfg: Config, world_size: int, manifest: dict[str, Any] | None) -> dict[str, Any]:
    """The settings a checkpoint is bound to besides the task's head (``Task.signature``), as plain JSON values."""
    sig: dict[str, Any] = {"task": cfg.task, **{f"model.{k}": getattr(cfg.model, k) for k in MODEL_FIXED}}
    sig["world_size"] = world_size
    sig["dist.zero_stage"] = cfg.dist.zero_stage
    sig["dist.precision"] = resolve_precision(cfg.dist.precision)  # 'auto' is bf16 on GPU, fp32 on CPU
    for name in overridable_keys(cfg):
        sig[name] = data_fingerprint(manifest) if name == "data" else _setting(cfg, name)
    return sig


def saved_signature(manifest: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A checkpoint's signature; checkpoints written before signatures existed fall back to the run
    folder's config.yaml (model and data-order settings) and the manifest's world size."""
    if isinstance(manifest.get("resume"), dict):
        return manifest["resume"]
    sig: dict[str, Any] = {"world_size": manifest.get("world_size")}
    try:
        old = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()) or {})
    except (OSError, ValueError, yaml.YAMLError, TypeError):
        return sig  # nothing readable to compare with: the DeepSpeed load still checks shapes
    full = resume_signature(old, sig["world_size"], None)
    full.pop("data")
    return full


def _show(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def check_resume(saved: dict[str, Any], current: dict[str, Any], allowed: list[str], folder: Path,
                 overridable: tuple[str, ...] = RESUME_OVERRIDABLE) -> list[str]:
    """Raise ConfigError (one line) for a refused change; return the allowed changes, for a warning.
    ``overridable``: the settings that may change when ``allowed`` names them (``overridable_keys(cfg)``)."""
    fixed, exact, accepted = [], [], []
    for name, now in current.items():
        if (name not in saved or saved[name] == now or name in ELASTIC
                or (name == "data" and None in (saved[name], now))):
            continue
        change = (name, saved[name], now)
        if name not in overridable:
            fixed.append(change)
        elif name in allowed:
            accepted.append(f"{name} {_show(saved[name])} -> {_show(now)}")
        else:
            exact.append(change)
    if fixed:
        raise ConfigError(_fixed_message(fixed, folder))
    if exact:
        was = ", ".join(f"{n} was {_show(a)}, now {_show(b)}" for n, a, b in exact)
        back = " ".join(f"{n}={_show(a)}" for n, a, _ in exact if n != "data")
        names = ",".join(n for n, _, _ in exact)
        raise ConfigError(f"cannot resume '{folder}' exactly: {was}; set {'it' if len(exact) == 1 else 'them'} back"
                          f"{' (' + back + ')' if back else ''}, or accept a run that differs from an uninterrupted "
                          f"one with train.allow_resume_changes=[{names}], or start afresh with a new train.out")
    return accepted


def _fixed_message(fixed: list[tuple[str, Any, Any]], folder: Path) -> str:
    was = ", ".join(f"{n} was {_show(a)}, now {_show(b)}" for n, a, b in fixed)
    back = " ".join(f"{n}={_show(a)}" for n, a, _ in fixed)
    way = (f"set {back} to resume it, or start a new run with another train.out "
           f"(e.g. train.out={folder.parent.parent}_new)")
    return f"the checkpoint '{folder}' belongs to another model or layout ({was}); it cannot be resumed so: {way}"


def elastic_problem(saved: dict[str, Any], current: dict[str, Any], folder: Path, consolidated: str) -> str:
    """Why ``folder`` cannot be resumed at the current world size / ZeRO stage ('' when it can): only a
    checkpoint holding the consolidated trainable state (file ``consolidated``) can be re-partitioned."""
    changed = [(n, saved[n], current[n]) for n in ELASTIC
               if n in saved and n in current and saved[n] is not None and saved[n] != current[n]]
    if not changed or (folder / consolidated).is_file():
        return ""
    was = ", ".join(f"{n} was {_show(a)}, now {_show(b)}" for n, a, b in changed)
    back = " and ".join(f"{a} ranks" if n == "world_size" else f"{n}={_show(a)}" for n, a, _ in changed)
    return (f"the checkpoint '{folder}' predates resuming at another world size or ZeRO stage ({was}; it holds no "
            f"{consolidated}): relaunch with {back}, or start a new run with another train.out")
