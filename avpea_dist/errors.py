"""The error types and value checks that every config section uses (the run's and each task's).

Apart from ``config.py`` so that a task's section (``avpea_dist/tasks/<task>/config.py``) can use them
while ``config.py`` imports the sections: no import cycle.
"""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration the user wrote is wrong; the message says which key and how to fix it."""


class RefusedOnRankZero(ConfigError):
    """Raised on the other ranks when rank 0 refused the run: rank 0 states the reason, once."""


def check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}")


def check_positive(name: str, value: float, zero_ok: bool = False) -> None:
    if value < 0 or (value == 0 and not zero_ok):
        raise ConfigError(f"{name}={value!r} must be {'>= 0' if zero_ok else '> 0'}")
