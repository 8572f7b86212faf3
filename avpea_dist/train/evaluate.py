"""Evaluation, every sample counted exactly once across ranks: the task's ``evaluate`` on a split, and
``avpea eval`` (an export on a split, for any task).

The eval loader gives each rank a disjoint share of the split (ranks may get different numbers of
batches), so a task's evaluation loop runs without collectives and gathers its counts once at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from ..tasks.avel.metrics import evaluate_segments as evaluate  # noqa: F401  (AVEL's, by its pre-task name)
from ..tasks.avel.metrics import majority_accuracy  # noqa: F401  (re-exported)


def evaluate_task(task: Any, model: nn.Module, batches: Iterable[dict[str, Any]], device: torch.device
                  ) -> dict[str, Any]:
    """``task.evaluate`` on a split, checked: its result must carry the selection metric."""
    m = task.evaluate(model, batches, device)
    if task.selection_metric not in m:
        raise KeyError(f"task {task.name!r}: evaluate() returned no {task.selection_metric!r} (its selection "
                       f"metric); it returned {sorted(m)}")
    return m


def scalars(m: dict[str, Any]) -> dict[str, Any]:
    """The flat numbers of an evaluation (what metrics.jsonl lines carry); tables and lists stay out."""
    return {k: v for k, v in m.items() if v is None or isinstance(v, (bool, int, float))}


def evaluate_export(cfg: Any, checkpoint: str, split: str) -> dict[str, Any]:
    """``avpea eval``: the frozen backbone of ``cfg`` + an adapter export, on ``split``, across the ranks
    of the environment (one process without a launcher), for the config's task."""
    from ..runtime import world as avdist
    from ..models.model import build_model
    from .data_source import ShardData
    from .export import load_trainable

    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"adapter file '{checkpoint}' does not exist; pass RUN/best/adapters.safetensors "
                                f"or RUN/final/adapters.safetensors from a training run")
    info = avdist.world_info_from_env()
    if info.world_size > 1:
        avdist.init_process_group(info, cfg.dist.backend, cfg.dist.timeout_s)
    ok = False
    try:
        data = ShardData(cfg, info.rank, info.world_size)
        torch.manual_seed(cfg.train.seed)  # a random-init backbone is rebuilt exactly as training built it
        model = build_model(cfg.model, task=data.task)
        meta = load_trainable(model, checkpoint, cfg.model)
        device = torch.device("cuda", info.local_rank) if torch.cuda.is_available() else torch.device("cpu")
        model.to(device)
        result = evaluate_task(data.task, model, data.eval_batches(split), device)
        ok = True
    finally:
        avdist.teardown(barrier=ok)
    result.update(task=cfg.task, selection_metric=data.task.selection_metric, split=split,
                  checkpoint=str(checkpoint), trained_step=meta.get("step"))
    return result
