"""The ``retrieval:`` section of a run config (VALOR-32K text <-> clip retrieval). Read when ``task: retrieval``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...errors import ConfigError, check_choice, check_positive


@dataclass
class RetrievalConfig:
    LOCAL_PATHS: ClassVar[dict[str, tuple[str, ...]]] = {"text_model": ("shards",)}
    """Keys that may name a local model folder (recorded absolute at the start of a run), with their keywords."""

    text_model: str = "shards"
    """Text encoder: 'shards' (the small text transformer and WordPiece tokenizer saved with the shards by
    the build, for the embedded set), a local folder holding a Hugging Face model and tokenizer, or a hub
    name such as 'bert-base-uncased' (VALOR-L's; needs the model in the local Hugging Face cache: no
    network at run time)."""
    train_text: bool = True
    """Train the text encoder (at the head learning rate) or keep it frozen."""
    embed_dim: int = 256
    """Width of the shared text/clip embedding space."""
    pooling: str = "mean"
    """How a clip's per-segment embeddings become one: 'mean', or 'fine' (VALOR's token-level fine-grained
    similarity between caption tokens and clip segments)."""
    text_pooling: str = "cls"
    """How a caption's token vectors become one: 'cls' (the first token, BERT's [CLS]) or 'mean' (masked mean)."""
    temperature: float = 0.07
    """Initial softmax temperature (learnable; its inverse is clamped at 100 as CLIP does)."""
    max_text_len: int = 40
    """Caption length in tokens, special tokens included (longer captions are cut)."""

    def __post_init__(self) -> None:
        check_choice("retrieval.pooling", self.pooling, ("mean", "fine"))
        check_choice("retrieval.text_pooling", self.text_pooling, ("cls", "mean"))
        check_positive("retrieval.embed_dim", self.embed_dim)
        check_positive("retrieval.max_text_len", self.max_text_len)
        if not 0 < self.temperature <= 1:
            raise ConfigError(f"retrieval.temperature={self.temperature} must lie in (0, 1]")
        if not self.text_model:
            raise ConfigError("retrieval.text_model is empty; give 'shards', a local model folder or a hub name")
