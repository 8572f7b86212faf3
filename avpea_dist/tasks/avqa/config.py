"""The ``avqa:`` section of a run config (MUSIC-AVQA question answering). Read only when ``task: avqa``."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import check_positive


@dataclass
class AVQAConfig:
    hidden: int = 512
    """Width of the AVST head's fused features (question LSTM state, grounded audio/visual features)."""
    word_dim: int = 512
    """Question word embedding width."""
    heads: int = 4
    """Heads of the question-guided temporal attention."""
    dropout: float = 0.1
    """Dropout inside the head (the frozen backbone has none)."""
    match_weight: float = 0.0
    """Weight of AVST's positive/negative audio-visual frame-matching loss; 0 turns it (and its MLP) off."""
    standardise: bool = False
    """Standardise the head's inputs per channel (shift/scale from the first training batch, then held):
    for a frozen random-init ViT, whose tokens share one large component (see head.py, FeatureStandardise)."""
    max_question_words: int = 14
    """Question length in words after filling (longer ones are cut; MUSIC-AVQA's longest is 14)."""

    def __post_init__(self) -> None:
        for name in ("hidden", "word_dim", "heads", "max_question_words"):
            check_positive(f"avqa.{name}", getattr(self, name))
        check_positive("avqa.match_weight", self.match_weight, zero_ok=True)
        if not 0 <= self.dropout < 1:
            from ...errors import ConfigError
            raise ConfigError(f"avqa.dropout={self.dropout} must lie in [0, 1)")
