"""Caption samples -> batch fields, and the tokenizer the decoder writes with.

The shards store captions as text (schema 'captions': ``{"id", "key", "split", "captions": [str, ...]}``); the
loader tokenises them with the decoder's tokenizer, so one set of shards serves any text model. Training
takes ONE caption per clip per epoch, chosen as a pure function of (train.seed, epoch, key): a resumed run
sees the same captions as an uninterrupted one. Evaluation codecs keep every caption (the references).

Sequences are ``[CLS] caption [SEP]`` (BERT's special tokens: [CLS] starts decoding, [SEP] ends it), padded
with [PAD], at most ``max_len`` tokens in all (longer captions are cut, keeping the closing [SEP]).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from ...errors import ConfigError
from ...datasets.valor import textmodel


def load_tokenizer(source: str) -> Any:
    """The decoder's tokenizer (a local folder or a hub name in the local cache: ``valor.textmodel``), checked
    to have the special tokens decoding needs."""
    tok = textmodel.load_tokenizer(source)
    missing = [name for name in ("cls_token_id", "sep_token_id") if getattr(tok, name) is None]
    if missing:
        raise ConfigError(f"the tokenizer at {source!r} lacks {', '.join(missing)}: captioning needs a BERT-style "
                          f"tokenizer ([CLS] starts a caption, [SEP] ends it, [PAD] pads)")
    return tok


def pick_caption(seed: int, epoch: int, key: str, count: int) -> int:
    """Index of the caption a training clip shows in ``epoch`` (stable across processes and Python runs)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % count


@dataclass
class CaptionTarget:
    clip_id: str
    references: list[str]
    train: list[str]  # the captions this sample contributes token rows for


class CaptionCodec:
    """``parse``: a sample's json -> ``CaptionTarget``; ``collate``: -> ``text_ids`` (C, L), ``text_mask``
    (C, L), ``caption_video`` (C,) (the clip of each row), ``captions`` (every clip's references) and
    ``clip_ids`` (the verbatim ids). ``pick=(seed, epoch)`` for training (one caption per clip), None for
    evaluation (all of them). Pickles without its tokenizer (loaded on first use in each loader worker)."""

    def __init__(self, tokenizer_source: str, max_len: int, pick: tuple[int, int] | None) -> None:
        self.source, self.max_len, self.pick = tokenizer_source, max_len, pick
        self._tok: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tok": None}

    @property
    def tokenizer(self) -> Any:
        if self._tok is None:
            self._tok = load_tokenizer(self.source)
        return self._tok

    def parse(self, meta: dict[str, Any], key: str) -> CaptionTarget:
        captions = meta.get("captions")
        if not isinstance(captions, list) or not captions:
            raise ValueError(f"sample '{key}': 'captions' is {type(captions).__name__}, expected a non-empty list")
        bad = [c for c in captions if not isinstance(c, str) or not c.strip()]
        if bad:
            raise ValueError(f"sample '{key}': {len(bad)} caption(s) empty or not text, e.g. {bad[0]!r}")
        chosen = captions
        if self.pick is not None:
            chosen = [captions[pick_caption(self.pick[0], self.pick[1], key, len(captions))]]
        return CaptionTarget(str(meta.get("id", key)), list(captions), list(chosen))

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return textmodel.tokenize(self.tokenizer, texts, self.max_len)

    def collate(self, targets: list[CaptionTarget]) -> dict[str, Any]:
        texts = [c for t in targets for c in t.train]
        video = [i for i, t in enumerate(targets) for _ in t.train]
        ids, mask = self.tokenize(texts)
        return {"text_ids": ids, "text_mask": mask, "caption_video": torch.tensor(video, dtype=torch.int64),
                "captions": [t.references for t in targets], "clip_ids": [t.clip_id for t in targets]}
