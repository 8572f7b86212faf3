"""Evaluation of a split for any task, every sample counted exactly once across ranks; and ``avpea eval``.

The eval loader gives each rank a disjoint share of the split and ranks may get different numbers of
batches, so nothing inside the batch loop talks to another rank: the task scores each batch
(``Task.eval_batch`` -> ``EvalPart``) and this module adds the parts up. Every rank then runs the same
fixed sequence of collectives, however many batches it had: one gather of the per-sample parts (with the
layout of the sums, so that a rank with an empty share still contributes zeros of the right shape), one
all-reduce of the sums, and for a ``reduce_once`` task one broadcast of the result.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from ..runtime.collectives import all_gather_objects, all_reduce_, broadcast_from_first, rank_and_size
from ..runtime.progress import track
from ..tasks.base import EvalPart, batch_size_of


@dataclass
class _Share:
    """This rank's running totals over its batches."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    rows: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    items: dict[str, list[Any]] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    skipped: int = 0

    def add(self, task_name: str, part: EvalPart) -> None:
        if not isinstance(part, EvalPart):
            raise TypeError(f"task {task_name!r}: eval_batch() returned a {type(part).__name__}, not an EvalPart")
        for k, v in part.sums.items():
            v = torch.as_tensor(v).detach().double().cpu()
            if k in self.sums and self.sums[k].shape != v.shape:
                raise ValueError(f"task {task_name!r}: EvalPart.sums[{k!r}] changed shape between batches "
                                 f"({tuple(self.sums[k].shape)} then {tuple(v.shape)})")
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()  # never alias a task's tensor
        for k, v in part.rows.items():
            self.rows.setdefault(k, []).append(v.detach().cpu())
        for k, v in part.items.items():
            self.items.setdefault(k, []).extend(v)


def evaluate_task(task: Any, model: nn.Module, batches: Iterable[dict[str, Any]], device: torch.device, *,
                  split: str = "eval") -> dict[str, Any]:
    """``task`` on every batch of this rank's share of a split, combined over ranks: the task's
    ``eval_reduce`` result plus ``samples`` (clips scored on all ranks) and ``skipped`` (clips the loaders
    could not decode). The same dict on every rank. ``split`` names the split for the task's reduce.
    The model is evaluated in eval mode without gradients and given back in the mode it came in."""
    share = _Share()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in track(batches, f"evaluate {split}", unit="batch"):  # a bar, or a line every 10 s
                share.skipped += int(batch.get("skipped", 0))
                if batch_size_of(batch) == 0:
                    continue  # every clip of the batch was skipped
                share.keys += list(batch["key"])
                share.add(task.name, task.eval_batch(model, batch, device))
    finally:
        model.train(was_training)
    sums, rows, items, samples, skipped = _combine(task.name, share)
    if samples == 0:
        raise ValueError(f"the evaluation split yielded no clips on any rank ({skipped} skipped); check "
                         f"data.shards and its manifest (avpea shards verify)")
    m = _reduce(task, split, sums, rows, items)
    if task.selection_metric not in m:
        raise KeyError(f"task {task.name!r}: eval_reduce() returned no {task.selection_metric!r} (its selection "
                       f"metric); it returned {sorted(m)}")
    m.update(samples=samples, skipped=skipped)
    return m


def _combine(task_name: str, share: _Share) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor],
                                                      dict[str, list[Any]], int, int]:
    """Every rank's share -> (sums, rows, items, samples, skipped) of the whole split, on every rank."""
    local = {"layout": {k: tuple(v.shape) for k, v in share.sums.items()}, "keys": share.keys,
             "rows": {k: _cat_padded(v) for k, v in share.rows.items()}, "items": share.items}
    packets = all_gather_objects(local)
    keys = [k for p in packets for k in p["keys"]]
    if len(set(keys)) != len(keys):
        dup = sorted(k for k, n in Counter(keys).items() if n > 1)[:3]
        raise ValueError(f"evaluation saw clips {dup} more than once across ranks: the eval stream must give each "
                         f"clip to exactly one rank")
    layout: dict[str, tuple[int, ...]] = {}
    for p in packets:
        for k, shape in p["layout"].items():
            if layout.setdefault(k, shape) != shape:
                raise ValueError(f"task {task_name!r}: EvalPart.sums[{k!r}] has shape {layout[k]} on one rank and "
                                 f"{shape} on another")
    names = sorted(layout)
    flat = [share.sums[k].flatten() if k in share.sums else torch.zeros(layout[k], dtype=torch.float64).flatten()
            for k in names]
    packet = all_reduce_(torch.cat([*flat, torch.tensor([float(len(share.keys)), float(share.skipped)],
                                                         dtype=torch.float64)]))
    sums, at = {}, 0
    for k in names:
        n = int(torch.Size(layout[k]).numel())
        sums[k], at = packet[at:at + n].view(layout[k]), at + n
    samples, skipped = (int(x) for x in packet[at:].tolist())
    rows = {k: _cat_padded([p["rows"][k] for p in packets if k in p["rows"]])
            for k in dict.fromkeys(k for p in packets for k in p["rows"])}
    items: dict[str, list[Any]] = {}
    for p in packets:
        for k, v in p["items"].items():
            items.setdefault(k, []).extend(v)
    return sums, rows, items, samples, skipped


def _cat_padded(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along dim 0; other dims that differ (a token axis) are zero-padded to the largest."""
    if len(parts) == 1:
        return parts[0]
    if {p.dim() for p in parts} != {parts[0].dim()}:
        raise ValueError(f"EvalPart.rows of one key must keep their number of dims; got {[p.dim() for p in parts]}")
    if parts[0].dim() > 1:
        top = [max(p.shape[d] for p in parts) for d in range(1, parts[0].dim())]
        parts = [_pad_to(p, top) for p in parts]
    return torch.cat(parts)


def _pad_to(t: torch.Tensor, trailing: list[int]) -> torch.Tensor:
    if list(t.shape[1:]) == trailing:
        return t
    out = t.new_zeros((t.shape[0], *trailing))
    out[(slice(None), *(slice(0, n) for n in t.shape[1:]))] = t
    return out


def _reduce(task: Any, split: str, sums: dict[str, torch.Tensor], rows: dict[str, torch.Tensor],
            items: dict[str, list[Any]]) -> dict[str, Any]:
    """``task.eval_reduce`` on every rank, or on rank 0 only for a ``reduce_once`` task: then its result (or
    its ValueError, so that no rank waits for a broadcast that never comes) reaches every rank."""
    if not getattr(task, "reduce_once", False) or rank_and_size()[1] == 1:
        return task.eval_reduce(split, sums, rows, items)
    outcome: Any = None
    failure: Exception | None = None
    if rank_and_size()[0] == 0:
        try:
            outcome = {"result": task.eval_reduce(split, sums, rows, items)}
        except Exception as e:  # noqa: BLE001  (sent on, then raised on every rank)
            failure, outcome = e, {"error": f"task {task.name!r}: eval_reduce failed on rank 0: {e}",
                                   "value_error": isinstance(e, ValueError)}
    outcome = broadcast_from_first(outcome)
    if failure is not None:
        raise failure
    if "error" in outcome:
        raise (ValueError if outcome["value_error"] else RuntimeError)(outcome["error"])
    return outcome["result"]


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
        data = ShardData(cfg, info.rank, info.world_size, splits=(split,))
        torch.manual_seed(cfg.train.seed)  # a random-init backbone is rebuilt exactly as training built it
        model = build_model(cfg.model, task=data.task)
        meta = load_trainable(model, checkpoint, cfg.model, data.task.signature())
        device = torch.device("cuda", info.local_rank) if torch.cuda.is_available() else torch.device("cpu")
        model.to(device)
        result = evaluate_task(data.task, model, data.eval_batches(split), device, split=split)
        ok = True
    finally:
        avdist.teardown(barrier=ok)
    result.update(task=cfg.task, selection_metric=data.task.selection_metric, split=split,
                  checkpoint=str(checkpoint), trained_step=meta.get("step"))
    return result
