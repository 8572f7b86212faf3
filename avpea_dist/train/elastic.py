"""The trainable state by parameter name, independent of the world size and the ZeRO stage.

Every checkpoint carries, beside DeepSpeed's per-rank files, one consolidated copy of what training
changes: the fp32 adapter and head weights, AdamW's moments (``exp_avg``, ``exp_avg_sq``) and step per
parameter, the schedule's position and DeepSpeed's step counters (``trainable.safetensors``, written by
rank 0). A resume at the world size and ZeRO stage the checkpoint was written with loads DeepSpeed's own
files (bit for bit as before); any other world size or stage loads this copy and lets the new engine
partition it. Why a consolidated copy and not DeepSpeed's universal checkpoint or torch.distributed.checkpoint
(DCP): the trainable state is small (~150 MB at the paper configuration, see docs/training.md for the
measured cost), universal checkpoints need an offline conversion step with pickle loads
(``ds_to_universal``), and DCP does not know DeepSpeed's ZeRO 1/2 flat partitions; safetensors loads
without running code.

ZeRO 1/2 partitions are gathered and scattered with DeepSpeed's own fragment helpers
(``safe_get_full_fp32_param`` / ``safe_{get,set}_full_optimizer_state``, through compat/deepspeed.py), so the
padding and alignment of its flat buffers never leak into the file.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..compat.deepspeed import (full_fp32_param, full_optimizer_state, set_full_fp32_param, set_full_optimizer_state,
                                zero_flat_partitions, zero_link_optimizer_states)
from ..compat.torch import scheduler_position
from .safeload import CheckpointError

CONSOLIDATED = "trainable.safetensors"
COUNTERS = ("bad_samples", "seen_samples")
"""Per-rank loop counters; at another world size their sums over the old ranks are shared out again."""


def _trainable(engine: Any) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in engine.module.named_parameters() if p.requires_grad]


def _zero_stage(engine: Any) -> int:
    return int(engine.zero_optimization_stage()) if engine.zero_optimization() else 0


def _plain_optimizer(engine: Any) -> Any:
    opt = engine.optimizer
    return opt if isinstance(opt, torch.optim.Optimizer) else getattr(opt, "optimizer", opt)


def gather_trainable(engine: Any) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Collective: every trainable parameter's fp32 value, optimizer moments and step, by name.

    Tensors are named ``param/<name>``, ``<state key>/<name>`` (``exp_avg``, ``exp_avg_sq``) and
    ``step/<name>``; the metadata holds the schedule's position and DeepSpeed's counters (JSON strings).
    Every rank returns the full state (the partitions are all-reduced); rank 0 writes it.
    """
    out: dict[str, torch.Tensor] = {}
    stage = _zero_stage(engine)
    params = _trainable(engine)
    if stage in (1, 2):
        opt = engine.optimizer
        steps, keys = {}, []
        for flat, inner in zero_flat_partitions(opt):
            state = inner.state.get(flat, {})
            keys = [k for k, v in state.items() if torch.is_tensor(v) and v.shape == flat.shape]
            if "step" in state:
                steps[id(flat)] = float(state["step"])
        linked = bool(keys)
        if linked:
            zero_link_optimizer_states(opt)
        group_step = _zero_group_steps(opt, steps)
        for name, p in params:
            out[f"param/{name}"] = full_fp32_param(p).detach().cpu().clone()
            for key in keys if linked else ():
                out[f"{key}/{name}"] = full_optimizer_state(p, key).detach().cpu().clone()
            if id(p) in group_step:
                out[f"step/{name}"] = torch.tensor(group_step[id(p)], dtype=torch.float32)
    elif stage == 0:
        opt = _plain_optimizer(engine)
        for name, p in params:
            out[f"param/{name}"] = p.detach().float().cpu().clone()
            for key, value in opt.state.get(p, {}).items():
                if torch.is_tensor(value) and key != "step" and value.shape == p.shape:
                    out[f"{key}/{name}"] = value.detach().cpu().clone()
                elif key == "step":
                    out[f"step/{name}"] = torch.tensor(float(value), dtype=torch.float32)
    else:
        raise CheckpointError(f"ZeRO stage {stage} is not supported by the checkpoints (use dist.zero_stage 0, 1 or 2)")
    sched = engine.lr_scheduler
    position = scheduler_position(sched) if sched is not None else {}
    meta = {"format": "avpea-trainable", "version": "1", "zero_stage": str(stage),
            "world_size": str(dist.get_world_size() if dist.is_initialized() else 1),
            "schedule": json.dumps(position),
            "engine": json.dumps({"global_steps": int(engine.global_steps), "global_samples": int(engine.global_samples),
                                  "skipped_steps": int(getattr(engine, "skipped_steps", 0))})}
    return out, meta


def _zero_group_steps(opt: Any, steps: dict[int, float]) -> dict[int, float]:
    """id(parameter) -> the AdamW step of the flat partition its group is stepped in."""
    out = {}
    for (flat, _), group in zip(zero_flat_partitions(opt), opt.bit16_groups):
        if id(flat) in steps:
            out.update({id(p): steps[id(flat)] for p in group})
    return out


def consolidated_bytes(engine: Any, keep: bool = True) -> tuple[bytes, dict[str, str]]:
    """Collective: the safetensors file of ``gather_trainable``; ``keep=False`` (every rank but the writer)
    takes part in the gather and returns no bytes."""
    from safetensors.torch import save as st_save

    tensors, meta = gather_trainable(engine)
    return (st_save(tensors, metadata=meta) if keep else b""), meta


def zero_stage_of(engine: Any) -> int:
    return _zero_stage(engine)


def load_consolidated(engine: Any, path: Path) -> dict[str, Any]:
    """Put a consolidated trainable state into a freshly built engine of any world size and ZeRO stage.
    Every rank reads the whole file and keeps its own partition; returns the file's metadata (decoded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = {k: json.loads(raw[k]) for k in ("schedule", "engine")}
        meta.update(zero_stage=int(raw["zero_stage"]), world_size=int(raw["world_size"]))
    except Exception as e:  # a damaged or foreign file (its manifest may vouch for it): every rank stops
        raise CheckpointError(f"'{path}' is unreadable ({type(e).__name__}: {e}); delete its checkpoint folder "
                              f"to resume from an older one, or resume at the world size it was written with") from None
    params = _trainable(engine)
    names = {n for n, _ in params}
    saved = {k.split("/", 1)[1] for k in tensors if k.startswith("param/")}
    if saved != names:
        missing, extra = sorted(names - saved)[:3], sorted(saved - names)[:3]
        raise CheckpointError(f"'{path}' holds other trainable parameters than this model (missing {missing}, "
                              f"unknown {extra}); the checkpoint belongs to another model: use a new train.out")
    keys = sorted({k.split("/", 1)[0] for k in tensors} - {"param", "step"})
    for name, p in params:
        value = tensors[f"param/{name}"]
        if value.shape != p.shape:
            raise CheckpointError(f"'{path}': '{name}' has shape {tuple(value.shape)}, this model "
                                  f"{tuple(p.shape)}; the checkpoint belongs to another model: use a new train.out")
    stage = _zero_stage(engine)
    with torch.no_grad():
        if stage in (1, 2):
            opt = engine.optimizer
            _zero_fill_state(opt, params, tensors, keys)
            for name, p in params:
                value = tensors[f"param/{name}"].to(p.device)
                set_full_fp32_param(p, value)
                p.data.copy_(value.to(p.dtype))  # the module's copy, which the next forward reads
                for key in keys:
                    set_full_optimizer_state(p, tensors[f"{key}/{name}"].to(p.device), key)
        else:
            opt = _plain_optimizer(engine)
            for name, p in params:
                p.data.copy_(tensors[f"param/{name}"].to(p.device, p.dtype))
                if f"step/{name}" in tensors:
                    state = opt.state[p]
                    state["step"] = _step_tensor(tensors[f"step/{name}"], opt, p)
                    for key in keys:
                        state[key] = tensors[f"{key}/{name}"].to(p.device).clone()
    sched = getattr(engine, "lr_scheduler", None)
    if sched is not None and meta["schedule"]:
        sched.load_state_dict({**sched.state_dict(), **meta["schedule"]})
    for k, v in meta["engine"].items():
        setattr(engine, k, v)
    return meta


def _step_tensor(step: torch.Tensor, opt: Any, p: torch.Tensor) -> torch.Tensor:
    """AdamW's step as torch keeps it: a float32 scalar on the CPU, on the parameter's device when fused."""
    group = next((g for g in opt.param_groups if any(q is p for q in g["params"])), {})
    on_device = group.get("fused") or group.get("capturable")
    return step.to(torch.float32).to(p.device if on_device else "cpu").clone()


def _zero_fill_state(opt: Any, params: list[tuple[str, torch.nn.Parameter]], tensors: dict[str, torch.Tensor],
                     keys: list[str]) -> None:
    """ZeRO 1/2: create the wrapped optimizer's state for every flat partition (AdamW creates it lazily at
    its first step), with the saved step, so the fragment helpers can write the moments into it."""
    by_id = {id(p): n for n, p in params}
    for (flat, inner), group in zip(zero_flat_partitions(opt), opt.bit16_groups):
        names = [by_id[id(p)] for p in group if id(p) in by_id]
        steps = [tensors[f"step/{n}"] for n in names if f"step/{n}" in tensors]
        if not steps:
            continue
        state = inner.state[flat]
        state["step"] = _step_tensor(steps[0], inner, flat)
        for key in keys:
            state[key] = torch.zeros_like(flat)
    if keys:
        zero_link_optimizer_states(opt)


def merge_loop_states(states: list[dict[str, Any]], rank: int, world: int) -> dict[str, Any]:
    """This rank's loop state at a new world size from every old rank's: the shared fields (step, data
    position, best score) are rank 0's; the per-rank counters are summed and shared out again, remainder to
    the lowest ranks, so their totals (and the bad-data fraction) stay what they were; problem lines are
    united."""
    if not states:
        raise CheckpointError("the checkpoint holds no rank state files")
    merged = json.loads(json.dumps(states[0]))  # a deep copy of plain JSON
    merged.update(rank=rank, world_size=world)
    for key in COUNTERS:
        total = sum(int(s.get(key, 0)) for s in states)
        merged[key] = total // world + (1 if rank < total % world else 0)
    problems: list[str] = []
    for s in states:
        for line in (s.get("extra") or {}).get("problems", []):
            if line not in problems:
                problems.append(line)
    merged.setdefault("extra", {})["problems"] = problems
    return merged


def rank_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of ``rank`` after a resume at another world size: a function of (seed, step, rank) only,
    so two resumes of one checkpoint at one world size draw the same numbers (old ranks' RNG states cannot be
    mapped onto new ranks)."""
    return zlib.crc32(f"avpea-rng:{seed}:{step}:{rank}".encode())
