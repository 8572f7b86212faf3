"""The codec of the 'captions' schema: a sample's captions -> the batch's text fields, for every task that
reads these shards (retrieval and captioning). One codec per schema, so the same shards give the same
per-epoch captions whichever task trains on them.

Shard json: ``{"id", "key", "split", "captions": [str, ...]}``. Captions are stored as text and tokenised
here, in the loader, with the task's tokenizer (``textmodel.tokenize``: ``[CLS] caption [SEP]``, padded, at
most ``max_len`` tokens), so one set of shards serves any text model. The tokenizer is loaded lazily in each
loader worker (the codec pickles as a folder name and a few numbers).

Training picks ONE caption per clip per epoch, a pure function of (seed, epoch, key): a resumed run sees
the same captions, and over epochs every caption of a clip gets its turn. Evaluation gives all of them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from .textmodel import load_tokenizer, tokenize


def pick_caption(seed: int, epoch: int, key: str, count: int) -> int:
    """Index of the caption trained on in ``epoch``: a stable hash (not Python's salted ``hash``)."""
    digest = hashlib.blake2b(f"{seed}\0{epoch}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % count


def read_captions(meta: dict[str, Any], key: str) -> list[str]:
    """The sample's captions, whitespace collapsed; ValueError (the stream skips the sample) for anything
    malformed."""
    captions = meta.get("captions") if isinstance(meta, dict) else None
    if not isinstance(captions, list) or not captions:
        raise ValueError(f"sample '{key}': 'captions' must be a non-empty list of strings, got {captions!r:.80}")
    out = []
    for c in captions:
        if not isinstance(c, str) or not c.strip():
            raise ValueError(f"sample '{key}': caption {c!r:.80} is empty or not text")
        out.append(" ".join(c.split()))
    return out


@dataclass
class CaptionTargets:
    clip_id: str
    """The clip's id as the release spells it (the json's ``id``; the tar key when absent)."""
    captions: list[str]
    """All captions of the clip (the references)."""
    chosen: list[str]
    """The captions this sample contributes text rows for: one in training, all of them in evaluation."""


class CaptionCodec:
    """``parse`` -> CaptionTargets; ``collate`` -> ``text_ids`` int64 (C, L), ``text_mask`` int64 (C, L),
    ``caption_video`` int64 (C,) (the clip of each text row, an index into the batch), ``captions``
    list[list[str]] (every caption of every clip), ``clip_ids`` list[str] (each clip's verbatim id)."""

    def __init__(self, text_source: str, max_len: int, *, train: bool, seed: int = 0, epoch: int = 0) -> None:
        self.text_source, self.max_len = text_source, max_len
        self.train, self.seed, self.epoch = train, seed, epoch
        self._tokenizer: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokenizer": None}  # workers load their own

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.text_source)
        return self._tokenizer

    def parse(self, meta: dict[str, Any], key: str) -> CaptionTargets:
        captions = read_captions(meta, key)
        clip_id = str(meta.get("id", key))
        if self.train:
            return CaptionTargets(clip_id, captions, [captions[pick_caption(self.seed, self.epoch, key, len(captions))]])
        return CaptionTargets(clip_id, captions, captions)

    def collate(self, targets: list[CaptionTargets]) -> dict[str, Any]:
        import torch

        texts = [c for t in targets for c in t.chosen]
        ids, mask = tokenize(self.tokenizer, texts, self.max_len)
        video = torch.tensor([i for i, t in enumerate(targets) for _ in t.chosen], dtype=torch.int64)
        return {"text_ids": ids, "text_mask": mask, "caption_video": video, "captions": [t.captions for t in targets],
                "clip_ids": [t.clip_id for t in targets]}
