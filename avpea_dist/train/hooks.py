"""Points of a training run where a caller looks in or plants a fault, without touching the trainer's code.

``run_training(cfg, hooks=...)`` (and ``entry.main(argv, hooks=...)``, the program every launcher starts)
calls these methods at fixed places of a rank's run. The defaults do nothing; a subclass overrides the
ones it needs. The fault-injection tests (tests/reliability/rankfaults.py) record every batch, step, save
and load through them and kill, freeze, signal or starve a rank at any of them, so the production code keeps
no module-level names for tests to replace.

Every method runs on the rank's main thread, in the order the run reaches it; none may run a collective
(the other ranks would not match it). Counting occurrences (the n-th save, the 4th barrier) is the hooks'
business: the trainer passes what it knows at that point.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from ..tasks.base import TaskLoss


class TrainHooks:
    """No-op hook points of one rank's run; subclass and override."""

    def on_batch(self, epoch: int, index: int, batch: dict[str, Any]) -> None:
        """A training micro-batch was fetched: batch ``index`` of virtual epoch ``epoch``, as the loader gave it."""

    def before_step(self, engine: Any) -> None:
        """An optimizer step is about to start (its micro-batches are fetched); ``engine`` is DeepSpeed's."""

    def after_step(self, engine: Any, result: Any) -> None:
        """The step returned ``result`` (a ``loop.StepResult``), applied or skipped on every rank."""

    def on_loss(self, outputs: Any, batch: dict[str, Any], loss: "TaskLoss") -> "TaskLoss":
        """The task's loss on one micro-batch was computed from ``outputs``; what is returned is what the step
        backpropagates (``loss`` itself unless a caller changes it, e.g. makes it non-finite)."""
        return loss

    def after_backward(self, micro: int) -> None:
        """The local backward of micro-batch ``micro`` (0-based within the step) returned."""

    def before_eval(self, split: str) -> None:
        """An evaluation of ``split`` ('val' or the final split) is about to start."""

    def before_save(self, step: int) -> None:
        """A checkpoint save of ``step`` is about to start (every rank enters it)."""

    def after_save(self, step: int, folder: Path) -> None:
        """The checkpoint of ``step`` is complete in ``folder`` (not called when the save failed)."""

    def after_load(self, engine: Any, folder: Path, state: dict[str, Any]) -> None:
        """The run resumed from ``folder``: the engine and the RNG are restored, ``state`` is the loop state."""

    def checkpoint_file(self, path: Path, f: BinaryIO) -> BinaryIO:
        """A checkpoint file (DeepSpeed's states, a rank file, the manifest, ``latest``) is being written
        atomically to ``path`` through ``f``; what is returned is written to instead (``f`` by default)."""
        return f

    def before_prune(self, folder: Path) -> None:
        """Rank 0 is about to delete the old checkpoint ``folder`` (its manifest already gone)."""

    def before_barrier(self) -> None:
        """A rank is about to wait in a barrier of a checkpoint save (the trainer's or DeepSpeed's)."""


NO_HOOKS = TrainHooks()
"""The hooks of a run nobody watches."""
