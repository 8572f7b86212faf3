"""Progress of a long phase (evaluation, search indexing, captioning, prediction), the same way everywhere.

On a terminal, rank 0 draws a tqdm bar. Everywhere else (a log file, a batch job, a rank other than 0, whose
bars would overwrite each other) it writes one line every ``every_s`` seconds and one at the end, so a phase
shorter than ``every_s`` writes nothing and a stuck one shows where it stands. Lines go to the logging
system when the process has set it up (training ranks), else to stderr; never to stdout, which carries
commands' results.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Iterable, Iterator, TypeVar

T = TypeVar("T")

EVERY_S = 10.0
"""Seconds between two progress lines off a terminal."""

log = logging.getLogger("avpea_dist.progress")


def _rank() -> int:
    for name in ("RANK", "SLURM_PROCID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def _length(items: Any) -> int | None:
    try:
        return len(items)
    except TypeError:  # a stream (an IterableDataset's loader) has no length
        return None


class Progress:
    """``update(n)`` as work is done; ``close()`` (or the ``with`` block's end) finishes the bar or writes the
    last line. ``total`` may be None (a stream of unknown length): the lines then count without a percentage."""

    def __init__(self, desc: str, total: int | None = None, unit: str = "it", *, every_s: float | None = None,
                 rank: int | None = None, bar: bool | None = None) -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.every_s = EVERY_S if every_s is None else every_s
        self.rank = _rank() if rank is None else rank
        self.done = 0
        self.start = self.last = time.monotonic()
        self.lines = 0
        if bar is None:
            bar = self.rank == 0 and sys.stderr.isatty() and not os.environ.get("TQDM_DISABLE")
        self.bar = None
        if bar:
            from tqdm import tqdm

            # disable=False: TQDM_DISABLE was honoured above (tqdm reads it once, at its import).
            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True,
                            disable=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._line(now)

    def _line(self, now: float, end: bool = False) -> None:
        where = "" if self.rank == 0 else f"[rank {self.rank}] "
        of = f" of {self.total}" if self.total else ""
        share = f" ({100 * self.done // self.total}%)" if self.total else ""
        rate = self.done / max(now - self.start, 1e-9)
        text = (f"{where}{self.desc}: {'done, ' if end else ''}{self.done}{of} {self.unit}{share} after "
                f"{now - self.start:.0f} s ({rate:.2f} {self.unit}/s)")
        self.lines += 1
        if logging.getLogger().handlers:
            log.info(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.lines:  # a phase that wrote progress lines says when it ends; a short one stays silent
            self._line(time.monotonic(), end=True)
            self.lines = 0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(items: Iterable[T], desc: str, *, total: int | None = None, unit: str = "it",
          every_s: float | None = None, rank: int | None = None) -> Iterator[T]:
    """``items`` one by one, counting each as one ``unit`` of progress (``total``: ``len(items)`` if it has one)."""
    with Progress(desc, total if total is not None else _length(items), unit, every_s=every_s, rank=rank) as p:
        for item in items:
            yield item
            p.update()
