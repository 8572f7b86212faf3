"""The ``captioning:`` section of a run config (VALOR-32K captioning). Read when ``task: captioning``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...errors import ConfigError, check_positive


@dataclass
class CaptioningConfig:
    LOCAL_PATHS: ClassVar[dict[str, tuple[str, ...]]] = {"decoder": ("scratch", "shards")}
    """Keys that may name a local model folder (recorded absolute at the start of a run), with their keywords."""

    decoder: str = "scratch"
    """Text decoder: 'scratch' (a small transformer decoder of the sizes below, writing with the tokenizer saved
    beside the shards), 'shards' (the small BERT saved beside the shards, turned decoder), a local folder
    holding a Hugging Face BERT-family model and its tokenizer, or a hub name such as 'bert-base-uncased' in
    the local Hugging Face cache (no network at run time). A BERT becomes a decoder with ``is_decoder`` and
    ``add_cross_attention`` (its cross-attention layers start from random init)."""
    layers: int = 2
    """Decoder layers ('scratch' only)."""
    width: int = 256
    """Decoder width ('scratch' only)."""
    heads: int = 4
    """Decoder attention heads ('scratch' only)."""
    dropout: float = 0.1
    """Dropout in the decoder's attention and feed-forward blocks ('scratch' only; a Hugging Face decoder keeps
    its own config's)."""
    max_len: int = 30
    """Caption length in tokens, in training and in decoding."""
    label_smoothing: float = 0.0
    """Label smoothing of the teacher-forced cross-entropy."""
    beam: int = 3
    """Beam width at evaluation and in `avpea caption`; 1 is greedy decoding."""
    length_penalty: float = 1.0
    """Beam scores are divided by length ** length_penalty."""

    def __post_init__(self) -> None:
        for name in ("layers", "width", "heads", "max_len", "beam"):
            check_positive(f"captioning.{name}", getattr(self, name))
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"captioning.dropout={self.dropout} must lie in [0, 1)")
        if self.max_len < 3:
            raise ConfigError(f"captioning.max_len={self.max_len} must be >= 3 ([CLS], a word, [SEP])")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"captioning.label_smoothing={self.label_smoothing} must lie in [0, 1)")
        if self.width % self.heads:
            raise ConfigError(f"captioning.heads={self.heads} must divide captioning.width={self.width}")
        if not self.decoder:
            raise ConfigError("captioning.decoder is empty; give 'scratch', a local model folder or a hub name")
