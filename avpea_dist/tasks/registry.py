"""Building the run's task: its class from the plug-in registry (``plugins.py``), checked against the shards."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..plugins import schema_readers, task_spec, task_specs

if TYPE_CHECKING:
    from .base import Task


def task_names() -> tuple[str, ...]:
    return tuple(task_specs())


def get_task(name: str) -> "type[Task]":
    """The task class registered as ``name``; a ConfigError lists the known ones."""
    return task_spec(name).task_class()


def build_task(cfg: Any, manifest: dict[str, Any] | None) -> "Task":
    """The run's task, checked against the shards: their schema first (a clear ConfigError naming both),
    then the task's own checks (class count, vocabulary, text model...). ``manifest`` None: no shards."""
    cls = get_task(cfg.task)
    if manifest is not None:
        schema = manifest.get("schema", "avel")  # the shard format's rule (data/manifest.py): written before schemas
        if schema != cls.schema:
            users = " or ".join(f"task={n}" for n in schema_readers(schema) if n != cfg.task)
            raise ConfigError(f"task={cfg.task} reads shards of schema '{cls.schema}', but data.shards="
                              f"'{cfg.data.shards}' holds schema '{schema}'; point data.shards at {cls.schema} "
                              f"shards{' or set ' + users if users else ''}")
    return cls(cfg, manifest)
