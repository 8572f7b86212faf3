"""One optimizer step: forward, backward, an all-ranks finiteness check, then update or skip.

The decision to skip is collective: each rank raises a flag for a non-finite loss or gradient, the
flags are all-reduced (MAX), and every rank either steps or discards its gradients. A skipped step
leaves parameters, optimizer state, the schedule and the step counter bitwise unchanged.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..dist import comm_device


class TrainingError(RuntimeError):
    """The run cannot go on (too many non-finite steps, too much corrupt data); the message says why."""


@dataclass
class LoopState:
    """What the loop must remember across a restart besides the engine: saved in every checkpoint."""

    step: int = 0
    consecutive_skips: int = 0
    skipped_steps: int = 0
    bad_samples: int = 0
    seen_samples: int = 0
    best_val_accuracy: float | None = None
    best_step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LoopState":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


def data_position(step: int, grad_accum: int, epoch_batches: int) -> tuple[int, int]:
    """(virtual epoch, batch within it) of the first micro-batch of optimizer step ``step``."""
    micro = step * grad_accum
    return micro // epoch_batches, micro % epoch_batches


def all_reduce_(t: torch.Tensor, op: Any = None) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        buf = t.to(comm_device())
        dist.all_reduce(buf, op=op or dist.ReduceOp.SUM)
        if buf is not t:
            t.copy_(buf)
    return t


def segment_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every segment of every clip (AVEL's per-segment objective)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())


def _local_grads_finite(engine: Any) -> bool:
    """Whether this rank's (already reduced) gradients are all finite, wherever DeepSpeed keeps them."""
    opt = engine.optimizer
    if engine.zero_optimization():
        grads = [g for group in getattr(opt, "averaged_gradients", {}).values() for g in (group or [])]
        grads += [p.grad for group in opt.bit16_groups for p in group if p.grad is not None]
        ipg = getattr(opt, "grads_in_partition", None)
        if ipg is not None:
            grads.append(ipg)
    else:
        grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
    checks = [torch.isfinite(g).all() for g in grads if g is not None]
    return bool(torch.stack(checks).all()) if checks else True  # one host sync, not one per tensor


def _discard_gradients(engine: Any) -> None:
    """Drop this step's gradients and keep DeepSpeed's micro-step counter in phase, without updating."""
    opt = engine.optimizer
    if engine.zero_optimization():
        # What DeepSpeed's ZeRO optimizer does itself on an fp16 overflow.
        opt.zero_grad(set_to_none=True)
        release = getattr(opt, "_release_preflattened_grad_buffers", None)
        if release is not None:
            release()
        for k in getattr(opt, "averaged_gradients", {}):
            opt.averaged_gradients[k] = None
            if hasattr(opt, "all_grad_tensors"):
                opt.all_grad_tensors[k] = None
        if getattr(opt, "grads_in_partition", None) is not None:
            opt.grads_in_partition.zero_()
            opt.grads_in_partition_offset = 0
        if hasattr(opt, "micro_step_id"):
            opt.micro_step_id = -1
    else:
        engine.zero_grad()
    engine.micro_steps += 1


def keys_digest(keys: Iterable[str]) -> int:
    """A checksum of the sample keys of a batch: equal digests per step mean the same samples, same order."""
    h = 0
    for i, k in enumerate(keys):
        h = (h * 31 + zlib.crc32(f"{i}:{k}".encode())) % (1 << 40)
    return h


@dataclass
class StepResult:
    loss: float  # mean over ranks and micro-batches; NaN when skipped
    applied: bool  # False: skipped on every rank, nothing changed
    bad: int  # corrupt samples the loader replaced on this rank
    seen: int  # samples trained on this rank
    data_digest: int  # sum over ranks of each rank's keys digest (exact in float64)


def train_step(engine: Any, micro_batches: Iterable[dict[str, Any]], device: torch.device,
               modalities: str) -> StepResult:
    """One optimizer step over ``grad_accum`` micro-batches."""
    losses, bad, seen, digest = [], 0, 0, 0
    engine.train()
    batches = list(micro_batches)
    for i, batch in enumerate(batches):
        frames = batch["frames"].to(device, non_blocking=True) if modalities != "audio" else None
        audio = batch["audio"].to(device, non_blocking=True) if modalities != "visual" else None
        labels = batch["labels"].to(device, non_blocking=True)
        loss = segment_loss(engine(frames, audio), labels)
        engine.backward(loss)
        losses.append(loss.detach().float())
        bad += int(batch.get("skipped", 0))
        digest = (digest * 31 + keys_digest(batch.get("key", []))) % (1 << 40)
        seen += int(labels.shape[0])
        if i < len(batches) - 1:
            engine.step()  # between accumulation boundaries this only advances DeepSpeed's counter
    local = torch.stack(losses).mean()
    finite = bool(torch.isfinite(local)) and _local_grads_finite(engine)
    # One all-reduce carries the skip flag, the loss and the data digest.
    packet = torch.tensor([0.0 if finite else 1.0, local.item() if finite else 0.0, float(digest)],
                          dtype=torch.float64)
    all_reduce_(packet)
    world = dist.get_world_size() if dist.is_initialized() else 1
    if packet[0].item() > 0:
        _discard_gradients(engine)
        return StepResult(math.nan, False, bad, seen, int(packet[2].item()))
    engine.step()
    return StepResult(packet[1].item() / world, True, bad, seen, int(packet[2].item()))
