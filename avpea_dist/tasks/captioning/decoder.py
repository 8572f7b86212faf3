"""The caption decoder: what it reads from the AV-PEA encoder, and the two text decoders it can be.

``AVMemory`` turns the encoder's tokens into the decoder's memory as VALOR's decoder sees its video and audio:
every token of every segment of each present stream (CLS and patches), projected to the decoder width, plus a
learned segment embedding, a learned stream embedding and a learned token-position embedding (where in the
frame or spectrogram the token sits), then a LayerNorm. An ablation's absent stream adds no tokens at all
(the decoder cannot attend to what is not there).

Why the position embedding: cross-attention is blind to the order of the memory, so the decoder can only
read "left" or "right" from what a token's content says about its place. A random-init ViT's own position
embedding is tiny (timm draws it with std 0.02), so its tokens barely say it: measured on the demo set with
a decoder trained on cached frozen tokens, without this embedding the side was right in 34/60 test clips
after 1,200 steps (chance), with it 60/60 after 800 (colour and shape alike either way).

Decoders share one interface so that training, evaluation and ``avpea caption`` run the same code:
``prepare(memory (B, M, W)) -> cache`` once per clip, ``select(cache, clips)`` for a subset of clips, and
``forward(tokens (B, R, t), cache) -> logits (B, R, t, V)`` for R prefixes per clip (teacher forcing: R = 1;
beam search: R = beam).
- ``ScratchDecoder``: a small pre-LN transformer decoder (causal self-attention, cross-attention, MLP). The
  cross-attention keys and values of the memory are computed once per clip and shared by all R prefixes of
  that clip, so beam search does not multiply the memory work.
- ``HFDecoder``: a Hugging Face BERT-family model turned decoder (``is_decoder`` + ``add_cross_attention``;
  ``BertLMHeadModel`` for BERT), loaded with ``from_pretrained`` from a local folder or a hub name already in
  the local cache (``local_files_only``: never the network). Its cross-attention layers start from random
  init; the rest from the checkpoint. It recomputes the prefix at every step (no key/value cache): simple and
  exact, and cheap next to the encoder at 30 tokens.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


MAX_POSITIONS = 1024
"""Tokens per segment and stream that the position embedding covers (ViT-L/16 at 224 px has 197)."""


class AVMemory(nn.Module):
    """EncoderOutput -> (B, M, W): all tokens of all segments of the present streams, in stream order."""

    def __init__(self, embed_dim: int, streams: tuple[str, ...], segments: int, width: int) -> None:
        super().__init__()
        self.streams = tuple(streams)
        self.proj = nn.ModuleDict({s: nn.Linear(embed_dim, width) for s in self.streams})
        self.segment = nn.Parameter(torch.randn(segments, width) * 0.02)
        self.stream = nn.Parameter(torch.randn(len(self.streams), width) * 0.02)
        # At the scale of the projected tokens (std ~0.58 for layer-normed inputs and nn.Linear's init): a
        # token's place is as visible as its content from the first step (at std 0.02 the decoder learned the
        # side only after ~800 steps on the demo set, measured).
        self.position = nn.Parameter(torch.randn(len(self.streams), MAX_POSITIONS, width) * 0.5)
        self.norm = nn.LayerNorm(width)

    def forward(self, enc: Any) -> torch.Tensor:
        parts = []
        for i, s in enumerate(self.streams):
            tokens = enc.tokens(s)  # (B, T, N, D)
            if tokens.shape[1] > self.segment.shape[0]:
                raise ValueError(f"the encoder gave {tokens.shape[1]} segments; the caption decoder was built for "
                                 f"{self.segment.shape[0]} (model.num_segments)")
            if tokens.shape[2] > MAX_POSITIONS:
                raise ValueError(f"{tokens.shape[2]} tokens per segment exceed the caption memory's {MAX_POSITIONS} "
                                 f"positions; use a smaller model.img_size")
            x = self.proj[s](tokens.to(self.proj[s].weight.dtype))
            x = x + self.segment[: x.shape[1], None] + self.stream[i] + self.position[i, : x.shape[2]]
            parts.append(x.flatten(1, 2))
        return self.norm(torch.cat(parts, dim=1))


# ---------------------------------------------------------------------------------------------
# From scratch


class _Layer(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.qkv, self.out1 = nn.LayerNorm(width), nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.norm2, self.q, self.out2 = nn.LayerNorm(width), nn.Linear(width, width), nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.norm3 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.drop = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (..., L, W) -> (..., h, L, W/h)
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(memory).chunk(2, dim=-1)
        return self._split(k), self._split(v)  # (B, h, M, d)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x (B, R, t, W), kv: this layer's memory keys and values (B, h, M, d)."""
        B, R, t, W = x.shape
        p = self.dropout if self.training else 0.0
        q, k, v = self._split(self.qkv(self.norm1(x)).flatten(0, 1)).chunk(3, dim=-1)  # (B*R, h, t, d) each
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        x = x + self.drop(self.out1(att.transpose(1, 2).reshape(B, R, t, W)))
        # All R prefixes of a clip query the same memory: one attention call over R * t queries.
        q = self._split(self.q(self.norm2(x)).reshape(B, R * t, W))  # (B, h, R*t, d)
        att = F.scaled_dot_product_attention(q, kv[0], kv[1], dropout_p=p)
        x = x + self.drop(self.out2(att.transpose(1, 2).reshape(B, R, t, W)))
        return x + self.drop(self.mlp(self.norm3(x)))


class ScratchDecoder(nn.Module):
    """Token and position embeddings, ``layers`` pre-LN decoder layers, a final LayerNorm, a vocabulary head."""

    def __init__(self, vocab_size: int, width: int, layers: int, heads: int, max_len: int, dropout: float) -> None:
        super().__init__()
        self.width = width
        self.embed = nn.Embedding(vocab_size, width)
        self.pos = nn.Embedding(max_len, width)
        self.layers = nn.ModuleList(_Layer(width, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.lm = nn.Linear(width, vocab_size)
        self.drop = nn.Dropout(dropout)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02 if "out" not in name else 0.02 / math.sqrt(2 * layers))

    def prepare(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [layer.memory_kv(memory) for layer in self.layers]

    @staticmethod
    def select(cache: list[tuple[torch.Tensor, torch.Tensor]], clips: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        return [(k[clips], v[clips]) for k, v in cache]

    def forward(self, tokens: torch.Tensor, cache: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        t = tokens.shape[-1]
        if t > self.pos.num_embeddings:
            raise ValueError(f"{t} tokens exceed the decoder's {self.pos.num_embeddings} positions (captioning.max_len)")
        x = self.drop(self.embed(tokens) + self.pos.weight[:t])
        for layer, kv in zip(self.layers, cache):
            x = layer(x, kv)
        return self.lm(self.norm(x))


# ---------------------------------------------------------------------------------------------
# Hugging Face


class HFDecoder(nn.Module):
    """A BERT-family causal LM with cross-attention, e.g. ``BertLMHeadModel`` (see the module docstring)."""

    def __init__(self, source: str) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM

        from ...datasets.valor.textmodel import load_text_model

        self.lm = load_text_model(source, AutoModelForCausalLM, is_decoder=True, add_cross_attention=True)
        config = self.lm.config
        if not (config.is_decoder and config.add_cross_attention):
            raise ValueError(f"captioning.decoder={source!r}: {type(self.lm).__name__} did not become a decoder "
                             f"with cross-attention; use a BERT-family model")
        self.width = int(config.hidden_size)

    def prepare(self, memory: torch.Tensor) -> torch.Tensor:
        return memory

    @staticmethod
    def select(cache: torch.Tensor, clips: torch.Tensor) -> torch.Tensor:
        return cache[clips]

    def forward(self, tokens: torch.Tensor, cache: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, R, t = tokens.shape
        memory = cache.to(self.lm.dtype)
        memory = memory.repeat_interleave(R, dim=0) if R > 1 else memory
        out = self.lm(input_ids=tokens.reshape(B * R, t), encoder_hidden_states=memory,
                      attention_mask=None if mask is None else mask.reshape(B * R, t), use_cache=False)
        return out.logits.view(B, R, t, -1)


def build_decoder(source: str, vocab_size: int, *, width: int, layers: int, heads: int, max_len: int,
                  dropout: float) -> nn.Module:
    """'scratch' -> ``ScratchDecoder`` over ``vocab_size`` tokens; a resolved model folder or hub name ->
    ``HFDecoder(source)``."""
    if source == "scratch":
        return ScratchDecoder(vocab_size, width, layers, heads, max_len, dropout)
    return HFDecoder(source)
