"""Task name -> task class, imported on first use (reading a config must not import torch).

A new task adds its folder under ``avpea_dist/tasks/`` and one line here; nothing else in the trainer
changes. ``Config.task`` is checked against ``task_names()``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Task

# name -> "module:Class"
TASKS: dict[str, str] = {
    "avel": "avpea_dist.tasks.avel.task:AVELTask",
    "avqa": "avpea_dist.tasks.avqa.task:AVQATask",
    "retrieval": "avpea_dist.tasks.retrieval.task:RetrievalTask",
    "captioning": "avpea_dist.tasks.captioning.task:CaptioningTask",
}

# shard schema -> the registered tasks that read it (for error messages; each class states its own schema)
SCHEMA_READERS: dict[str, tuple[str, ...]] = {"avel": ("avel",), "avqa": ("avqa",),
                                              "captions": ("retrieval", "captioning")}


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


def get_task(name: str) -> "type[Task]":
    """The task class registered as ``name``; a ValueError lists the known ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(map(repr, TASKS))}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_task(cfg: Any, manifest: dict[str, Any] | None) -> "Task":
    """The run's task, checked against the shards: their schema first (a clear ConfigError naming both),
    then the task's own checks (class count, vocabulary, text model...). ``manifest`` None: no shards."""
    from ..config_base import ConfigError

    cls = get_task(cfg.task)
    if manifest is not None:
        schema = manifest.get("schema", "avel")
        if schema != cls.schema:
            users = " or ".join(f"task={n}" for n in SCHEMA_READERS.get(schema, ()) if n != cfg.task)
            raise ConfigError(f"task={cfg.task} reads shards of schema '{cls.schema}', but data.shards="
                              f"'{cfg.data.shards}' holds schema '{schema}'; point data.shards at {cls.schema} "
                              f"shards{' or set ' + users if users else ''}")
    return cls(cfg, manifest)
