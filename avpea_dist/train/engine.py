"""The DeepSpeed engine: its config, the trainable parameter groups, and the learning-rate schedule.

Only trainable parameters (adapters and the head) reach the optimizer, in four groups: adapters and
head each with their own peak rate, each split into matrices (weight decay) and biases/norms/gates (no
decay). The optimizer is torch's AdamW handed to DeepSpeed as a client optimizer: DeepSpeed's own Adam
JIT-compiles a C++ op on CPU for ~40 s and buys nothing on a trainable set this small.

Precision. The engine itself always runs in fp32: adapter and head master weights, their gradients, the
gradient accumulation across micro-batches and the gradient all-reduce are fp32. With bf16 (the GPU
default) the frozen backbone is stored in bf16 once and the forward runs under DeepSpeed's own
``torch_autocast`` (bf16 matrix products), told that no module may communicate in bf16. DeepSpeed's
``bf16`` mode is not used: it casts the whole module, adapters and head included, to bf16, so an update
below ~2^-9 of a weight never reaches the weights the forward and the export see, and it accumulates and
all-reduces gradients in bf16 (its fp32 accumulation exists only for ZeRO 1, not ZeRO 0).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from ..config import Config

log = logging.getLogger(__name__)


def resolve_precision(precision: str) -> str:
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() else "fp32"
    return precision


def param_groups(model: nn.Module, cfg: Config) -> list[dict[str, Any]]:
    """Trainable parameters only, grouped by (adapter | head) x (decay | no decay)."""
    groups: dict[str, dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "head" if name.startswith("head.") else "adapter"
        decay = p.ndim >= 2  # biases, norm scales and gates stay undecayed, as in AdamW practice
        key = f"{part}_{'decay' if decay else 'no_decay'}"
        if key not in groups:
            lr = cfg.optim.lr_head if part == "head" else cfg.optim.lr_adapter
            groups[key] = {"name": key, "params": [], "lr": lr,
                           "weight_decay": cfg.optim.weight_decay if decay else 0.0}
        groups[key]["params"].append(p)
    if not groups:
        raise ValueError("the model has no trainable parameters: with model.adapters=false the head still trains; "
                         "check that the model was built by avpea_dist.models.build_model")
    return [groups[k] for k in sorted(groups)]


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total`` optimizer steps."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupCosine:
    """The schedule as an object, not a closure: LambdaLR then saves its settings (plain numbers) in the
    scheduler state, which loads under ``weights_only=True``."""

    def __init__(self, warmup: int, total: int, min_ratio: float) -> None:
        self.warmup, self.total, self.min_ratio = warmup, total, min_ratio

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.warmup, self.total, self.min_ratio)


# DeepSpeed's ZeRO 1/2 start every rank's partition at a multiple of this many elements (4 bytes of
# fp16: ``nccl_start_alignment_factor``) and assert that the all-gather bucket is a multiple of it.
ZERO_ALIGNMENT = 2


def bucket_elements(trainable_params: int, world_size: int = 1) -> int:
    """One bucket that holds every trainable gradient, rounded up to DeepSpeed's partition alignment.

    DeepSpeed's default 500M-element buckets would be allocated, and in deterministic mode NaN-filled,
    every step for nothing; a bucket sized to the (often odd: 13,800,525 at the paper configuration)
    trainable count fails DeepSpeed's alignment assertion. Rounding to the alignment times the world size
    also covers the padding DeepSpeed adds to the last rank's partition."""
    align = ZERO_ALIGNMENT * max(1, world_size)
    n = max(1 << 20, trainable_params)
    return -(-n // align) * align


def deepspeed_config(cfg: Config, trainable_params: int = 50_000_000, world_size: int = 1) -> dict[str, Any]:
    precision = resolve_precision(cfg.dist.precision)
    bucket = bucket_elements(trainable_params, world_size)
    if precision == "bf16" and not torch.cuda.is_available():
        log.warning("dist.precision=bf16 on CPU: slow and not bit-reproducible; fp32 is the CPU default")
    zero: dict[str, Any] = {"stage": cfg.dist.zero_stage, "reduce_bucket_size": bucket,
                            "allgather_bucket_size": bucket}
    return {
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "gradient_accumulation_steps": cfg.optim.grad_accum,
        # ZeRO 1/2 clip their flat fp32 partitions and report the norm. At ZeRO 0 DeepSpeed would clip with
        # a Python loop over every tensor and keep no norm: train_step clips there, in one foreach pass.
        "gradient_clipping": cfg.optim.grad_clip if cfg.dist.zero_stage > 0 else 0.0,
        "zero_optimization": zero,
        "bf16": {"enabled": False},  # see the module docstring: fp32 engine, bf16 autocast forward
        "torch_autocast": {"enabled": precision == "bf16", "dtype": "bfloat16",
                           "lower_precision_safe_modules": []},  # no gradient is all-reduced in bf16
        "zero_allow_untested_optimizer": True,  # AdamW from torch is what ZeRO calls "untested"
        "steps_per_print": 1 << 30,  # our own metrics replace DeepSpeed's log lines
        "wall_clock_breakdown": False,
    }


def build_engine(model: nn.Module, cfg: Config) -> tuple[Any, torch.optim.lr_scheduler.LambdaLR]:
    """Wrap ``model`` in a DeepSpeed engine with AdamW and the warm-up + cosine schedule."""
    from ..compat.deepspeed import load

    deepspeed = load()
    import torch.distributed as dist

    precision = resolve_precision(cfg.dist.precision)
    if cfg.model.backbone_dtype == "bf16" or (cfg.model.backbone_dtype == "auto" and precision == "bf16"):
        model.set_backbone_dtype(torch.bfloat16)  # frozen weights only: adapters and head stay fp32
    groups = param_groups(model, cfg)
    optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr_adapter, betas=tuple(cfg.optim.betas),
                                  eps=cfg.optim.eps, foreach=False,
                                  # fused on GPU: one kernel per group. On CPU, foreach only loops in C++
                                  # and was slower (67 vs 41 ms a step here, benchmarks/engine_levers.py).
                                  fused=torch.cuda.is_available())
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(cfg.optim.warmup_steps, cfg.train.steps, cfg.optim.min_lr_ratio))
    trainable = sum(p.numel() for g in groups for p in g["params"])
    world = dist.get_world_size() if dist.is_initialized() else 1
    engine, _, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule,
                                                   config=deepspeed_config(cfg, trainable, world),
                                                   dist_init_required=False)
    engine.avpea_grad_clip = cfg.optim.grad_clip  # train_step clips at ZeRO 0 (see deepspeed_config)
    if world == 1 and cfg.dist.zero_stage == 0:
        # One rank: DeepSpeed would still flatten every gradient, scale it by 1 and copy it back.
        engine.enable_backward_allreduce = False
    return engine, scheduler
