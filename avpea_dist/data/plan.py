"""The build plan: every annotation record, shuffled per split (seeded), cut into shards, dealt to tasks.

The plan is a pure function of the annotation files and the build options, so every task of a split build
computes the same plan, and a rebuild of the same input gives the same shards, keys and bytes. Records are
shuffled before cutting because AVE's split files are grouped by class: shards cut in file order would
each hold one or two classes.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..datasets.ave.release import Clip


@dataclass(frozen=True)
class Shard:
    split: str
    name: str
    clips: tuple[Clip, ...]


def shuffled(clips: list[Clip], split: str, order_seed: int) -> list[Clip]:
    """The split's records in a seeded order (the split name is mixed in: splits get different orders)."""
    order = np.random.default_rng([order_seed, zlib.crc32(split.encode())]).permutation(len(clips))
    return [clips[i] for i in order]


def make_plan(splits: dict[str, list[Clip]], shard_size: int, order_seed: int) -> list[Shard]:
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


def fingerprint(classes: list[str], plan: list[Shard], preprocessing: dict[str, Any]) -> str:
    body = {"pre": preprocessing, "classes": classes,
            "plan": [[s.name, [asdict(c) for c in s.clips]] for s in plan]}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
