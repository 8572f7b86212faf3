"""DeepSpeed internals: the checkpoint engine we subclass, the engine's parsed config, the plain types its
checkpoints hold.

Import the functions (``from ..compat.deepspeed import ...``), never this module as a bare ``deepspeed``.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

DIST = "deepspeed"
CHECKED = ">=0.19.3,<0.20"
VERIFIED = "0.19.8"

CHECKPOINT_TYPES: tuple[tuple[str, str], ...] = (
    ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
    ("deepspeed.utils.tensor_fragment", "fragment_address"),
    # ZeRO-1/2 optimizer states hold the loss scaler (a plain object, even in fp32 and bf16).
    ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
    ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
)
"""(module, name) of the few non-tensor types DeepSpeed pickles into its state dicts."""


def load() -> ModuleType:
    """``import deepspeed``, without the ``import mlflow`` its autotuner makes at import time when mlflow is
    installed (the [trackers] extra): 1.65 s of the 3.8 s ``import deepspeed`` on a 2-core machine, paid by every
    rank process (measured with ``python -X importtime``). We never run DeepSpeed's autotuning, the one user of
    that import; our own MLflow tracker (``train.trackers``) imports mlflow itself, unaffected."""
    if "deepspeed" in sys.modules:
        return sys.modules["deepspeed"]
    blocked = "mlflow" not in sys.modules
    if blocked:
        sys.modules["mlflow"] = None  # type: ignore[assignment]  # `import mlflow` raises ImportError meanwhile
    try:
        import deepspeed
    finally:
        if blocked and "mlflow" in sys.modules and sys.modules["mlflow"] is None:
            del sys.modules["mlflow"]
    return deepspeed


def torch_checkpoint_engine() -> type:
    """DeepSpeed's ``TorchCheckpointEngine`` class, to subclass (atomic writes, safe loads).

    It lives under ``deepspeed.runtime.checkpoint_engine``; DeepSpeed offers no public hook for how
    checkpoint files are written or read other than replacing ``engine.checkpoint_engine`` with one.
    """
    load()
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    return TorchCheckpointEngine


def engine_config(engine: Any) -> Any:
    """The engine's parsed ``DeepSpeedConfig`` (``engine._config``), what DeepSpeed passes to the checkpoint
    engine it builds itself; the public ``engine.config`` is the raw dict the run was started with."""
    return engine._config


def checkpoint_safe_types(strict: bool = False) -> list[type]:
    """The classes of CHECKPOINT_TYPES, for ``torch.serialization.safe_globals``.

    One that no longer imports is left out (loading a checkpoint that holds it then fails with a clear
    CheckpointError); ``strict=True`` raises instead, which is what the compat test uses.
    """
    found: list[type] = []
    for module, name in CHECKPOINT_TYPES:
        try:
            load()
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            if strict:
                raise
    return found


def zero_flat_partitions(optimizer: Any) -> list[tuple[Any, Any]]:
    """ZeRO 1/2: (this rank's flat fp32 partition, the wrapped torch optimizer) per parameter group.

    The partitions are the parameters the wrapped optimizer steps and keys its state by
    (``single_partition_of_fp32_groups``, ``optimizer``: attributes, no public accessor).
    """
    inner = optimizer.optimizer
    return [(flat, inner) for flat in optimizer.single_partition_of_fp32_groups]


def zero_link_optimizer_states(optimizer: Any) -> None:
    """ZeRO 1/2: point every parameter's fragment mapping at the current optimizer state tensors.

    DeepSpeed links them lazily after its first step (``_lazy_init_hp_params_optimizer_state``); the
    ``safe_get/set_full_optimizer_state`` helpers need the link, also when the state was put in by hand.
    """
    optimizer._hp_optimizer_states_linked = False
    optimizer._lazy_init_hp_params_optimizer_state()


def full_fp32_param(param: Any) -> Any:
    """Collective under ZeRO 1/2: ``param``'s full fp32 master value, assembled from every rank's partition
    (``deepspeed.utils.safe_get_full_fp32_param``, exported from a module the compat test counts as internal)."""
    load()
    from deepspeed.utils import safe_get_full_fp32_param

    return safe_get_full_fp32_param(param)


def full_optimizer_state(param: Any, key: str) -> Any:
    """Collective under ZeRO 1/2: optimizer state ``key`` (``exp_avg``...) of ``param``, assembled likewise."""
    load()
    from deepspeed.utils import safe_get_full_optimizer_state

    return safe_get_full_optimizer_state(param, key)


def set_full_fp32_param(param: Any, value: Any) -> None:
    """ZeRO 1/2: write this rank's part of the full fp32 ``value`` into ``param``'s master partition."""
    load()
    from deepspeed.utils import safe_set_full_fp32_param

    safe_set_full_fp32_param(param, value)


def set_full_optimizer_state(param: Any, value: Any, key: str) -> None:
    """ZeRO 1/2: write this rank's part of the full ``value`` of optimizer state ``key`` of ``param``."""
    load()
    from deepspeed.utils import safe_set_full_optimizer_state

    safe_set_full_optimizer_state(param, value, key)
