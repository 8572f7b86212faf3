"""The ``avel:`` section of a run config (event localisation on AVE). Read only when ``task: avel``."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError, check_choice, check_positive


@dataclass
class AVELConfig:
    num_classes: int = 29
    """Classes per segment; AVE has 28 events + background. Must match the shards' manifest."""
    head_hidden: int = 512
    """Hidden width of the head: concat(audio CLS, visual CLS) -> hidden -> classes."""
    loss: str = "ce"
    """Training objective per segment: 'ce' (softmax cross-entropy) or 'bce_softmax' (LAVisH's: binary
    cross-entropy between the softmax and the one-hot target, averaged over every class of every segment)."""

    def __post_init__(self) -> None:
        check_positive("avel.head_hidden", self.head_hidden)
        if self.num_classes < 2:
            raise ConfigError(f"avel.num_classes={self.num_classes} must be >= 2")
        check_choice("avel.loss", self.loss, ("ce", "bce_softmax"))
