"""Reading checkpoint files without running code: ``torch.load(weights_only=True)`` with only the few plain
DeepSpeed types its state dicts hold allowed (DeepSpeed's own engine would unpickle anything)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the folder and what to do."""


def _safe_globals() -> list[Any]:
    # The few non-tensor types DeepSpeed puts in its state dicts; anything else is refused.
    allowed: list[Any] = []
    try:
        from deepspeed.runtime.zero.config import ZeroStageEnum
        allowed.append(ZeroStageEnum)
    except ImportError:
        pass
    try:
        from deepspeed.utils.tensor_fragment import fragment_address
        allowed.append(fragment_address)
    except ImportError:
        pass
    try:  # ZeRO-1/2 optimizer states hold the loss scaler (a plain object, even in fp32 and bf16)
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        allowed += [LossScaler, DynamicLossScaler]
    except ImportError:
        pass
    return allowed


def safe_torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        # torch's own text runs to many lines and suggests weights_only=False: exactly the wrong advice here.
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"checkpoint file '{path}' was refused by the safe loader ({type(e).__name__}: "
                              f"{first}); it is corrupt or holds pickled objects that could run code. Do not "
                              f"load it unsafely: resume from another checkpoint or start afresh "
                              f"(train.resume=none with a new train.out)") from None
