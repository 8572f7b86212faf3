"""The points of a sweep's grid: each one's folder name and config, and the metric a sweep ranks them by.

Shared by the sweep driver (sweep.py) and its report (sweep_report.py), so neither imports the other.
"""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError
from ..config_load import config_from_dict


def selection_metric(task: str) -> str:
    """The task's metric a sweep ranks trials by (``accuracy`` for AVEL); the registry imports the task lazily."""
    from ..tasks.registry import get_task

    return get_task(task).selection_metric


def grid(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]


def point_key(point: dict[str, Any]) -> str:
    """A folder name for a grid point: ``{'model.bottleneck': 64}`` -> ``bottleneck-64``."""
    parts = [f"{key.rsplit('.', 1)[-1]}-{value}" for key, value in point.items()]
    return re.sub(r"[^\w.+-]", "_", "__".join(parts))


def trial_config(base: dict[str, Any], point: dict[str, Any], sweep_dir: Path) -> Config:
    data = copy.deepcopy(base)
    for key, value in point.items():
        section = data
        *parents, leaf = key.split(".")
        for p in parents:
            section = section[p]
        section[leaf] = value
    data["train"]["out"] = str(sweep_dir / "runs" / point_key(point))
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"sweep point {point}: {e}") from None
