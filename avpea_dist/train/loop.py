"""One optimizer step: forward, backward, then update, or skip on every rank when anything is non-finite.

The skip decision is collective and mostly DeepSpeed's own. Before the last backward of a step, one
all-reduce carries each rank's non-finite-loss flag (with the loss, the accuracy counts and the data
digest); if any rank raised it, every rank multiplies its last loss by NaN, so every rank's gradients are
non-finite. At ZeRO 1/2 DeepSpeed's optimizer then finds the non-finite gradient norm itself (a collective
check), drops the gradients and skips the update; ``engine.was_step_applied()`` says so. At ZeRO 0 with
fp32 gradients DeepSpeed checks nothing, so the step computes the global norm itself (gradients are
already all-reduced, identical on every rank) and skips when it is not finite. Either way a skipped step
leaves parameters, optimizer state, the schedule and the step counters bitwise unchanged.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist

from ..runtime.collectives import all_reduce_
from ..tasks.base import to_device
from .hooks import NO_HOOKS, TrainHooks


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
    """The best val value of the task's selection metric (``best_val_score``); the name is the one checkpoints
    have always stored it under, so every checkpoint resumes."""
    best_step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best_val_score(self) -> float | None:
        return self.best_val_accuracy

    @best_val_score.setter
    def best_val_score(self, value: float | None) -> None:
        self.best_val_accuracy = value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LoopState":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class DataPosition:
    """Where the training stream stands: ``batch`` global batches of virtual epoch ``epoch`` consumed (a
    skipped step consumes its batch too), counted in global batches of ``global_batch`` clips. It is the
    same on every rank and means the same at every world size: a resume at any world size restarts there."""

    epoch: int = 0
    batch: int = 0
    global_batch: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataPosition":
        return cls(int(d["epoch"]), int(d["batch"]), int(d.get("global_batch", 0)))

    def restart(self, global_batch: int, epoch_batches: int) -> tuple[int, int]:
        """(epoch, first global batch) to restart the stream at with ``global_batch`` clips per batch and
        ``epoch_batches`` per epoch: the position itself, or (a global batch changed by
        train.allow_resume_changes) the first batch not wholly consumed, in clips."""
        batch = self.batch
        if self.global_batch and self.global_batch != global_batch:
            batch = -(-self.batch * self.global_batch // global_batch)
        return (self.epoch + 1, 0) if batch >= epoch_batches else (self.epoch, batch)


def data_position_of(state: "LoopState", epoch_batches: int, accum: int) -> DataPosition:
    """The loop state's data position (``state.extra['data_position']``); checkpoints from before it existed
    stored this rank's micro-batches consumed (``micro_batches``), read here at ``accum`` per global batch
    (exact only at the world size they were written at)."""
    saved = state.extra.get("data_position")
    if isinstance(saved, dict):
        return DataPosition.from_dict(saved)
    micro = int(state.extra.get("micro_batches", state.step * accum))
    batches = micro // max(1, accum)
    return DataPosition(batches // epoch_batches, batches % epoch_batches, 0)


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
    correct: int = 0  # training predictions right (the task's TaskLoss.correct), summed over ranks and micro-batches
    segments: int = 0  # what ``correct`` is out of (TaskLoss.count: AVEL's segments...), summed likewise
    grad_norm: float | None = None  # global gradient norm before clipping (inf when skipped); None: unknown


LossFn = Callable[[Any, dict[str, Any]], Any]
"""``loss_fn(outputs, batch) -> tasks.base.TaskLoss``: the task's objective on one micro-batch (``task.loss``)."""


def train_step(engine: Any, micro_batches: Iterable[dict[str, Any]], device: torch.device, loss_fn: LossFn,
               hooks: TrainHooks = NO_HOOKS) -> StepResult:
    """One optimizer step over ``grad_accum`` micro-batches: ``engine(batch)`` -> outputs, ``loss_fn(outputs,
    batch)`` -> ``TaskLoss`` (the task's; there is no default objective). The batch size is
    ``len(batch['key'])``."""
    if not callable(loss_fn):
        raise TypeError(f"train_step needs the task's loss function (task.loss), got {loss_fn!r}")
    batches = list(micro_batches)
    if not batches:
        raise ValueError("train_step needs at least one micro-batch")
    engine.train()
    streams = tuple(getattr(engine.module, "streams", ("a", "v")))
    losses, correct, segments, bad, seen, digest = [], 0, 0, 0, 0, 0
    for i, batch in enumerate(batches):
        on_device = to_device(batch, device, streams)
        outputs = engine(on_device)
        r = hooks.on_loss(outputs, on_device, loss_fn(outputs, on_device))
        loss = r.loss
        losses.append(loss.detach().float())
        correct = correct + r.correct
        segments += int(r.count)
        bad += int(batch.get("skipped", 0))
        digest = (digest * 31 + keys_digest(batch.get("key", []))) % (1 << 40)
        seen += len(batch.get("key", ()))
        if i == len(batches) - 1:
            packet = _share(losses, correct, segments, digest)
            loss = loss * torch.where(packet[0] > 0, math.nan, 1.0).to(loss.device)  # see the module docstring
        engine.backward(loss)
        hooks.after_backward(i)
        if i < len(batches) - 1:
            engine.step()  # between accumulation boundaries this only advances DeepSpeed's counter
    applied, grad_norm = _update(engine)
    _, loss_sum, digest_sum, correct_sum, segments_sum = packet.tolist()
    world = dist.get_world_size() if dist.is_initialized() else 1
    return StepResult(loss_sum / world if applied else math.nan, applied, bad, seen, int(digest_sum),
                      int(correct_sum), int(segments_sum), grad_norm)


def _share(losses: list[torch.Tensor], correct: Any, segments: int, digest: int) -> torch.Tensor:
    """All-reduce [ranks with a non-finite loss, loss, digest, correct, segments]: one collective, no host
    sync (the loss of a non-finite rank counts 0: the step is skipped and reports NaN anyway)."""
    local = torch.stack(losses).mean()
    finite = torch.isfinite(local)
    packet = torch.stack([(~finite).double(), torch.where(finite, local, 0.0).double(),
                          torch.as_tensor(float(digest), dtype=torch.float64, device=local.device),
                          torch.as_tensor(correct, device=local.device).double(),
                          torch.as_tensor(float(segments), dtype=torch.float64, device=local.device)])
    return all_reduce_(packet)


def _update(engine: Any) -> tuple[bool, float | None]:
    """Apply the step or skip it on every rank; (applied, global gradient norm before clipping)."""
    if engine.zero_optimization():
        steps, samples = engine.global_steps, engine.global_samples
        engine.step()
        norm = engine.get_global_grad_norm()
        if engine.was_step_applied():
            return True, None if norm is None else float(norm)
        # DeepSpeed counts a skipped step as a step; ours leaves the counters where they were.
        engine.global_steps, engine.global_samples = steps, samples
        return False, math.inf
    params = [p for g in engine.optimizer.param_groups for p in g["params"] if p.grad is not None]
    clip = getattr(engine, "avpea_grad_clip", 0.0)
    grads = [p.grad for p in params]
    # The global norm (gradients are already all-reduced); clipping a non-finite one is harmless: skipped.
    total = (torch.nn.utils.clip_grad_norm_(params, clip, foreach=True) if clip > 0
             else torch.nn.utils.get_total_norm(grads, foreach=True)) if grads else torch.zeros(())
    norm = float(total)
    if math.isfinite(norm):
        engine.step()
        return True, norm
    engine.zero_grad()
    engine.micro_steps += 1  # keep DeepSpeed's accumulation boundary in phase, as engine.step() would
    return False, math.inf
