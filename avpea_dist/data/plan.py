"""The build plan: every sample of a release, shuffled per split (seeded), cut into shards, dealt to tasks.

The plan is a pure function of the release's files and the build options, so every task of a split build
computes the same plan, and a rebuild of the same input gives the same shards, keys and bytes. Samples are
shuffled before cutting because release files are often grouped (AVE's split files by class): shards cut in
file order would each hold one or two classes.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np


@dataclass(frozen=True)
class Shard:
    split: str
    name: str
    clips: tuple[Any, ...]
    """The samples of the shard (a dataset's records or items), in write order."""


def shuffled(clips: Sequence[Any], split: str, order_seed: int) -> list[Any]:
    """The split's records in a seeded order (the split name is mixed in: splits get different orders)."""
    order = np.random.default_rng([order_seed, zlib.crc32(split.encode())]).permutation(len(clips))
    return [clips[i] for i in order]


def make_plan(splits: dict[str, Sequence[Any]], shard_size: int, order_seed: int) -> list[Shard]:
    plan = []
    for split, clips in splits.items():
        order = shuffled(clips, split, order_seed)
        plan += [Shard(split, f"{split}-{i // shard_size:06d}", tuple(order[i:i + shard_size]))
                 for i in range(0, len(order), shard_size)]
    return plan


def task_shards(plan: list[Shard], task: int, tasks: int) -> list[Shard]:
    """Task ``task`` of ``tasks`` builds shards task, task + tasks, ...: every task gets every split's
    shards in turn, so the decoding work is spread evenly."""
    if not 0 <= task < tasks:
        raise ValueError(f"task {task} is not in [0, {tasks})")
    return plan[task::tasks]


def fingerprint_inputs(files: Iterable[str | Path], options: dict[str, Any], records: Iterable[Any] = ()) -> str:
    """What a build is made from, hashed as a stream: each annotation file's name, size and bytes (1 MiB at a
    time), ``options`` as JSON, then ``records`` (what else decided the plan, e.g. rows skipped for a missing
    video) one JSON line at a time. Its cost is one read of the annotation files and constant memory, however
    many records they hold: the plan (a pure function of these) is not serialised to hash it."""
    h = hashlib.sha256()
    for path in files:
        path = Path(path)
        h.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    for rec in records:
        h.update(b"\n" + json.dumps(rec, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]
