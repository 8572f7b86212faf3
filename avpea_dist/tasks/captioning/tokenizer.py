"""The tokenizer the caption decoder writes with, checked for the special tokens decoding needs.

Sequences are ``[CLS] caption [SEP]`` (BERT's special tokens: [CLS] starts decoding, [SEP] ends it), padded
with [PAD]; the shards' captions are tokenised the same way by the schema's codec (``datasets/valor/codec.py``).
"""

from __future__ import annotations

from typing import Any

from ...datasets.valor import textmodel
from ...errors import ConfigError


def load_tokenizer(source: str) -> Any:
    """The decoder's tokenizer (a local folder or a hub name in the local cache: ``valor.textmodel``), checked
    to have the special tokens decoding needs."""
    tok = textmodel.load_tokenizer(source)
    missing = [name for name in ("cls_token_id", "sep_token_id") if getattr(tok, name) is None]
    if missing:
        raise ConfigError(f"the tokenizer at {source!r} lacks {', '.join(missing)}: captioning needs a BERT-style "
                          f"tokenizer ([CLS] starts a caption, [SEP] ends it, [PAD] pads)")
    return tok
