"""The captioning head: AV-PEA encoder tokens -> decoder memory -> caption tokens (teacher forcing or decoding).

``CaptioningHead(enc, batch)`` is the training forward: the memory of each clip, the decoder run on every
caption row of the batch (``text_ids`` without its last token) against its clip's memory (``caption_video``),
logits (C, L-1, V) for the next tokens. ``generate(enc)`` decodes captions for every clip (greedy or beam
search, ``decoding.py``): evaluation and ``avpea caption`` both call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .decoder import AVMemory, build_decoder
from .decoding import decode


@dataclass(frozen=True)
class TextSpec:
    """What the head needs to know about the tokenizer."""

    vocab_size: int
    bos: int
    eos: int
    pad: int


class CaptioningHead(nn.Module):
    def __init__(self, embed_dim: int, streams: tuple[str, ...], segments: int, text: TextSpec, cfg: Any,
                 source: str | None = None) -> None:
        """``cfg``: the run's ``captioning`` section (sizes, max_len); ``source``: 'scratch' or the resolved
        folder / hub name of a Hugging Face decoder (default: ``cfg.decoder`` as written)."""
        super().__init__()
        self.text, self.max_len = text, cfg.max_len
        self.decoder = build_decoder(source or cfg.decoder, text.vocab_size, width=cfg.width, layers=cfg.layers,
                                     heads=cfg.heads, max_len=cfg.max_len, dropout=cfg.dropout)
        self.memory = AVMemory(embed_dim, streams, segments, self.decoder.width)

    def forward(self, enc: Any, batch: dict[str, Any]) -> torch.Tensor:
        memory = self.memory(enc)
        rows = batch["caption_video"].to(memory.device)
        ids = batch["text_ids"].to(memory.device)
        cache = self.decoder.prepare(memory[rows])
        return self.decoder(ids[:, None, :-1], cache)[:, 0]  # (C, L-1, V)

    @torch.no_grad()
    def generate(self, enc: Any, *, beam: int, length_penalty: float, max_len: int | None = None) -> list[list[int]]:
        """Token ids (no [CLS]/[SEP]) of one caption per clip of ``enc``."""
        memory = self.memory(enc)
        cache = self.decoder.prepare(memory)

        def step(tokens: torch.Tensor, clips: torch.Tensor) -> torch.Tensor:
            logits = self.decoder(tokens, self.decoder.select(cache, clips))[:, :, -1]
            return F.log_softmax(logits.float(), dim=-1)

        return decode(step, memory.shape[0], bos=self.text.bos, eos=self.text.eos, max_len=max_len or self.max_len,
                      beam=beam, length_penalty=length_penalty, device=memory.device)


def caption_loss(logits: torch.Tensor, batch: dict[str, Any], label_smoothing: float = 0.0
                 ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Teacher-forced cross-entropy over the caption tokens after [CLS] ([SEP] included, padding excluded):
    -> (mean loss, next-token hits, tokens)."""
    target = batch["text_ids"][:, 1:].to(logits.device)
    mask = batch["text_mask"][:, 1:].to(logits.device).bool()
    if not mask.any():  # every clip of the micro-batch was skipped: a zero that still reaches every parameter
        return logits.sum() * 0.0, torch.zeros((), dtype=torch.int64, device=logits.device), 0
    picked = logits[mask].float()
    loss = F.cross_entropy(picked, target[mask], label_smoothing=label_smoothing)
    hits = (picked.detach().argmax(-1) == target[mask]).sum()
    return loss, hits, int(mask.sum().item())
