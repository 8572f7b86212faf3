"""The retrieval head: clip and caption embeddings in one shared, L2-normalised space.

Clip side (per clip, from the encoder's per-segment CLS tokens after the ViT's final norm):
  z_t = P_a(audio CLS_t) + P_v(visual CLS_t)                       (T, E), one vector per segment
  clip = normalise(mean_t z_t)                                      pooling 'mean'
A stream absent from ``EncoderOutput.streams`` (the audio-only / visual-only ablations) contributes no
term: the same as feeding zeros (no information) to a projection of the concatenated streams, bias aside.
Text side: the Hugging Face encoder's CLS token (or the masked mean of its tokens), projected by P_t and
normalised. Scores are cosines times a learnable logit scale exp(s), s initialised at log(1 / temperature)
and exp(s) clamped at 100 as CLIP does.

Pooling 'fine' (the token-level fine-grained similarity of VALOR / FILIP): the clip keeps its T normalised
segment vectors, the caption its L normalised token vectors (padding masked out), and
  sim(c, v) = 1/2 [ mean over tokens i of max_t <x_i, z_t>  +  mean over segments t of max_i <x_i, z_t> ].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import RetrievalConfig

MAX_LOGIT_SCALE = 100.0


@dataclass
class RetrievalOutput:
    clip: torch.Tensor
    """(B, E) normalised clip embeddings; with pooling 'fine', the normalised mean of the segment vectors."""
    text: torch.Tensor
    """(C, E) normalised caption embeddings (the projected CLS or mean token)."""
    caption_video: torch.Tensor
    """(C,) the clip (index into the batch) of each caption."""
    logit_scale: torch.Tensor
    """Scalar: exp(s), clamped at 100."""
    clip_tokens: torch.Tensor | None = None
    """(B, T, E) normalised segment vectors (pooling 'fine' only)."""
    text_tokens: torch.Tensor | None = None
    """(C, L, E) normalised token vectors, padding zeroed (pooling 'fine' only)."""
    text_mask: torch.Tensor | None = None
    """(C, L) 1 for real tokens (pooling 'fine' only)."""


def fine_similarity(text_tokens: torch.Tensor, text_mask: torch.Tensor, clip_tokens: torch.Tensor,
                    chunk: int = 64) -> torch.Tensor:
    """(C, L, E), (C, L), (V, T, E) -> (C, V) fine-grained similarity (see the module docstring); captions
    taken ``chunk`` at a time so a whole test split fits in memory."""
    rows = []
    for lo in range(0, text_tokens.shape[0], chunk):
        x, m = text_tokens[lo:lo + chunk], text_mask[lo:lo + chunk].to(text_tokens.dtype)
        s = torch.einsum("cle,vte->cvlt", x, clip_tokens)  # every token against every segment
        s_masked = s.masked_fill(m[:, None, :, None] == 0, -math.inf)
        t2v = (s.amax(3) * m[:, None, :]).sum(2) / m.sum(1).clamp(min=1)[:, None]  # token -> best segment
        v2t = s_masked.amax(2).mean(2)  # segment -> best real token
        rows.append((t2v + v2t) / 2)
    return torch.cat(rows) if rows else text_tokens.new_zeros(0, clip_tokens.shape[0])


class RetrievalHead(nn.Module):
    def __init__(self, dim: int, streams: tuple[str, ...], text_model: nn.Module, cfg: RetrievalConfig) -> None:
        super().__init__()
        if not streams or not set(streams) <= {"a", "v"}:
            raise ValueError(f"streams {streams!r} must be a non-empty subset of ('a', 'v')")
        self.cfg = cfg
        self.streams = tuple(streams)
        self.proj = nn.ModuleDict({s: nn.Linear(dim, cfg.embed_dim) for s in self.streams})
        self.text = text_model
        self.text_proj = nn.Linear(text_model.config.hidden_size, cfg.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / cfg.temperature)))
        pooler = getattr(self.text, "pooler", None)
        if pooler is not None:  # BERT's pooler is never used here: freeze it (no gradient ever reaches it)
            for p in pooler.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "RetrievalHead":
        super().train(mode)
        if not self.cfg.train_text:
            self.text.eval()  # a frozen text encoder runs without dropout
        return self

    def clip_segments(self, enc: "object") -> torch.Tensor:
        """EncoderOutput -> (B, T, E) unnormalised segment vectors: the sum of the present streams' projections."""
        z = None
        for s in self.streams:
            if s in enc.streams:  # type: ignore[attr-defined]
                term = self.proj[s](enc.cls(s).to(self.proj[s].weight.dtype))  # type: ignore[attr-defined]
                z = term if z is None else z + term
        if z is None:
            raise ValueError(f"the encoder output has streams {enc.streams!r}, the head needs one of {self.streams!r}")
        return z

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(C, L) ids and mask -> ((C, E) pooled, (C, L, E) token vectors), both projected, not normalised."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.cfg.train_text):
            hidden = self.text(input_ids=ids, attention_mask=mask).last_hidden_state
        tokens = self.text_proj(hidden.to(self.text_proj.weight.dtype))
        if self.cfg.text_pooling == "cls":
            pooled = tokens[:, 0]
        else:
            m = mask.to(tokens.dtype)[..., None]
            pooled = (tokens * m).sum(1) / m.sum(1).clamp(min=1)
        return pooled, tokens

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, enc: "object", batch: dict) -> RetrievalOutput:
        device = self.text_proj.weight.device
        z = self.clip_segments(enc)
        ids, mask = batch["text_ids"].to(device), batch["text_mask"].to(device)
        text, tokens = self.encode_text(ids, mask)
        out = RetrievalOutput(clip=F.normalize(z.mean(1), dim=-1), text=F.normalize(text, dim=-1),
                              caption_video=batch["caption_video"].to(device), logit_scale=self.scale())
        if self.cfg.pooling == "fine":
            out.clip_tokens = F.normalize(z, dim=-1)
            out.text_tokens = F.normalize(tokens, dim=-1) * mask[..., None].to(tokens.dtype)
            out.text_mask = mask
        return out
