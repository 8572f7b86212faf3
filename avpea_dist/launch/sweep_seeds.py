"""Results across seeds: mean, sample standard deviation and n of each number, for sweeps and demos.

A single seed moves AVE accuracy by a point or two, so a sweep point or a demo trained with several seeds is
reported as mean ± std over the seeds that produced a value, with n beside it: a seed that failed or was
stopped early is left out of the numbers and named instead, never silently averaged in.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

SEED_KEY = "train.seed"
"""The config key a sweep's seeds axis sets (``--seeds 0,1,2`` is ``--axis train.seed=0,1,2``)."""


@dataclass(frozen=True)
class Spread:
    mean: float | None
    std: float | None
    """Sample standard deviation (n - 1 in the denominator); None below two values."""
    n: int
    integral: bool = False
    """Every value was an integer (a count): shown without decimals when it does not vary."""

    def text(self, percent: bool = False, digits: int = 4, with_n: bool = True) -> str:
        """``81.20% ± 1.30 (n=3)`` with ``percent``, else ``0.8120 ± 0.0130 (n=3)``; ``-`` with no value."""
        n = f" (n={self.n})" if with_n else ""
        if self.mean is None:
            return "-" + n
        if self.integral and not self.std:
            return f"{self.mean:.0f}{n}"
        scale, unit, places = (100, "%", 2) if percent else (1, "", digits)
        std = "" if self.std is None else f" ± {scale * self.std:.{places}f}"
        return f"{scale * self.mean:.{places}f}{unit}{std}{n}"

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def spread(values: Iterable[Any]) -> Spread:
    """Mean, sample std and n of the finite numbers among ``values`` (None and non-numbers are not counted)."""
    given = [v for v in values if _number(v) is not None]
    nums = [float(v) for v in given]
    if not nums:
        return Spread(None, None, 0)
    return Spread(statistics.fmean(nums), statistics.stdev(nums) if len(nums) > 1 else None, len(nums),
                  all(isinstance(v, int) for v in given))


def flat_numbers(record: Mapping[str, Any], prefix: str = "") -> dict[str, int | float]:
    """The numeric leaves of a nested dict, by dotted key: ``{'acc': {'av_pea': 0.8}}`` -> ``{'acc.av_pea': 0.8}``."""
    out: dict[str, int | float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_numbers(value, f"{name}."))
        elif _number(value) is not None:
            out[name] = value
    return out


def across(records: Iterable[Mapping[str, Any]]) -> dict[str, Spread]:
    """Each numeric leaf of ``records`` (one per seed) -> its spread over the records that hold it, keys in the
    order they first appear."""
    flats = [flat_numbers(r) for r in records]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    return {k: spread(f.get(k) for f in flats) for k in keys}


def parse_seeds(text: str) -> list[int]:
    """``'0,1,2'`` -> ``[0, 1, 2]``; a clear error for anything but distinct non-negative integers."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    try:
        seeds = [int(t) for t in items]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: give comma-separated integers, e.g. --seeds 0,1,2") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r}: give distinct non-negative integers, e.g. --seeds 0,1,2")
    return seeds
