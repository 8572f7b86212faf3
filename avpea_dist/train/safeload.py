"""Reading checkpoint files without running code: ``torch.load(weights_only=True)`` with only the few plain
DeepSpeed types its state dicts hold allowed (DeepSpeed's own engine would unpickle anything)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..compat.deepspeed import checkpoint_safe_types


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the folder and what to do."""


def safe_torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    try:
        with torch.serialization.safe_globals(checkpoint_safe_types()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        # torch's own text runs to many lines and suggests weights_only=False: exactly the wrong advice here.
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"checkpoint file '{path}' was refused by the safe loader ({type(e).__name__}: "
                              f"{first}); it is corrupt or holds pickled objects that could run code. Do not "
                              f"load it unsafely: resume from another checkpoint or start afresh "
                              f"(train.resume=none with a new train.out)") from None
