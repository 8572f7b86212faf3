"""The ``classification:`` section of a run config (clip-level audio-visual classification on VGGSound or
AudioSet). Read only when ``task: classification``."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError, check_choice, check_positive


@dataclass
class ClassificationConfig:
    num_classes: int = 309
    """Classes of the shards' manifest (VGGSound: 309, AudioSet: 527); checked against it when a run starts."""
    multilabel: bool = False
    """False: one label per clip, softmax cross-entropy, selection on val top-1 accuracy (VGGSound).
    True: any number of labels per clip, binary cross-entropy per class, selection on val mAP (AudioSet).
    Must say what the manifest's ``multilabel`` says."""
    head_hidden: int = 0
    """0: the head is LayerNorm + Linear on the pooled tokens (AST's and CAV-MAE's classifier); > 0: a hidden
    layer of this width with GELU between (more head capacity for a random-init backbone)."""
    pooling: str = "mean"
    """How a clip's per-segment CLS tokens of each stream become one vector: 'mean' or 'max' over segments."""
    dropout: float = 0.0
    """Dropout on the pooled features before the classifier (training only)."""

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ConfigError(f"classification.num_classes={self.num_classes} must be >= 2 (the classes of the "
                              f"shards' manifest)")
        check_positive("classification.head_hidden", self.head_hidden, zero_ok=True)
        check_choice("classification.pooling", self.pooling, ("mean", "max"))
        if not isinstance(self.multilabel, bool):
            raise ConfigError(f"classification.multilabel={self.multilabel!r} must be true or false")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"classification.dropout={self.dropout} must lie in [0, 1)")
