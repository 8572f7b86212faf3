"""Task name -> task class, imported on first use (reading a config must not import torch).

A new task adds its folder under ``avpea_dist/tasks/`` and one line here; nothing else in the trainer
changes. ``Config.task`` is checked against ``task_names()``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Task

# name -> "module:Class"
TASKS: dict[str, str] = {
    "avel": "avpea_dist.tasks.avel.task:AVELTask",
    "avqa": "avpea_dist.tasks.avqa.task:AVQATask",
    "retrieval": "avpea_dist.tasks.retrieval.task:RetrievalTask",
    "captioning": "avpea_dist.tasks.captioning.task:CaptioningTask",
}


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


def get_task(name: str) -> "type[Task]":
    """The task class registered as ``name``; a ValueError lists the known ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(map(repr, TASKS))}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)
