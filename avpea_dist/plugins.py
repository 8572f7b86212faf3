"""What plugs in: tasks and datasets, each described by one spec and found where it lives.

A task is a package under ``avpea_dist/tasks/`` whose ``__init__.py`` defines ``SPEC = TaskSpec(...)``; a
dataset is a package under ``avpea_dist/datasets/`` with ``SPEC = DatasetSpec(...)``. Another installed
distribution adds one without editing this repository through the entry point groups ``avpea_dist.tasks``
and ``avpea_dist.datasets`` (each entry point loads to a spec). Nothing here names a task or a dataset.

Specs hold light things only (names, the config section class, "module:attr" strings): finding every
spec imports no torch, so reading a config or printing ``--help`` stays fast. The heavy objects (the Task
class, a builder) are imported by ``load`` when a command uses them. This module sits low in the layering:
it imports the packages it scans by name, never statically.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from .errors import ConfigError

TASK_GROUP = "avpea_dist.tasks"
DATASET_GROUP = "avpea_dist.datasets"


def load(ref: str) -> Any:
    """``"package.module:attr"`` -> the object (imports the module)."""
    module, _, attr = ref.partition(":")
    obj = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class TaskSpec:
    name: str
    """The config's ``task:`` value that picks this task; also the name of its config section."""
    task: str
    """``"module:Class"`` of the ``tasks.base.Task`` subclass (imported when a run builds the task)."""
    schema: str
    """The shard schema the task reads (``manifest["schema"]``); several tasks may read one schema."""
    section: type | None = None
    """The dataclass of the task's config section (``<name>:`` in a run config), or None when it has none.
    Its module must import nothing heavy (``errors`` only)."""
    commands: tuple[str, ...] = ()
    """Modules with ``register(subparsers)`` adding the task's own CLI commands (``avpea search``...)."""
    demo: str | None = None
    """``"module:attr"`` of the task's ``DemoSettings`` (``avpea demo --task <name>``), or None."""
    resume_overridable: tuple[str, ...] = ()
    """Keys of the task's section that ``train.allow_resume_changes`` may list (e.g. 'avel.loss')."""

    def task_class(self) -> type:
        return load(self.task)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    """``avpea shards build <name>`` / ``avpea shards synth <name>``."""
    schema: str
    """The shard schema its builder writes."""
    builder: str
    """``"module:attr"`` of the dataset's ``data.builder.DatasetBuilder`` (its release reader and options)."""
    synth: str | None = None
    """``"module:attr"`` of the embedded synthetic generator (a ``data.builder.SynthSource``), or None."""
    description: str = ""
    """One line for ``avpea shards build --help``."""
    aliases: tuple[str, ...] = field(default_factory=tuple)
    """Other names accepted on the command line."""


def _discover(package: str, group: str, kind: type) -> dict[str, Any]:
    specs: dict[str, Any] = {}
    pkg = importlib.import_module(package)
    found = [importlib.import_module(f"{package}.{m.name}") for m in pkgutil.iter_modules(pkg.__path__) if m.ispkg]
    candidates = [(m.__name__, getattr(m, "SPEC", None)) for m in found]
    for ep in entry_points(group=group):
        try:
            candidates.append((f"entry point {ep.name!r} ({ep.value})", ep.load()))
        except Exception as e:  # a broken third-party plug-in must not break every command
            raise ConfigError(f"the {group} entry point {ep.name!r} ({ep.value}) failed to load: {e}") from e
    for where, spec in candidates:
        if spec is None:
            continue
        if not isinstance(spec, kind):
            raise ConfigError(f"{where}: SPEC must be a {kind.__name__}, got {type(spec).__name__}")
        if spec.name in specs:
            raise ConfigError(f"two {kind.__name__}s are named {spec.name!r} ({where} and an earlier one); "
                              f"rename one")
        specs[spec.name] = spec
    return specs


@lru_cache(maxsize=None)
def task_specs() -> dict[str, TaskSpec]:
    """Every task found: the packages under ``avpea_dist/tasks/`` and the ``avpea_dist.tasks`` entry points."""
    return _discover("avpea_dist.tasks", TASK_GROUP, TaskSpec)


@lru_cache(maxsize=None)
def dataset_specs() -> dict[str, DatasetSpec]:
    """Every dataset found: packages under ``avpea_dist/datasets/`` and the ``avpea_dist.datasets`` entry points."""
    return _discover("avpea_dist.datasets", DATASET_GROUP, DatasetSpec)


def task_spec(name: str) -> TaskSpec:
    specs = task_specs()
    if name not in specs:
        known = ", ".join(map(repr, specs)) or "none found"
        raise ConfigError(f"unknown task {name!r}; choose one of {known}")
    return specs[name]


def dataset_spec(name: str) -> DatasetSpec:
    specs = dataset_specs()
    for spec in specs.values():
        if name == spec.name or name in spec.aliases:
            return spec
    raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(map(repr, specs)) or 'none found'}")


def schemas() -> tuple[str, ...]:
    """Every shard schema some dataset writes or some task reads."""
    return tuple(sorted({s.schema for s in dataset_specs().values()} | {s.schema for s in task_specs().values()}))


def schema_readers(schema: str) -> tuple[str, ...]:
    """The tasks that read shards of ``schema`` (for error messages)."""
    return tuple(n for n, s in task_specs().items() if s.schema == schema)
