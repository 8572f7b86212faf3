"""Small real inputs for the captioning tests: a BERT-style WordPiece tokenizer and a tiny BERT decoder saved
with ``save_pretrained`` (loaded back through the same path a real checkpoint takes), and encoder outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

CAPTIONS = ["a blue checkerboard on the left while a high chord plays",
            "a red disc in the middle and a dog barks",
            "a green stripe at the top while a low tone hums",
            "a yellow ring on the right as a bell rings twice"]


def make_tokenizer_folder(folder: Path, captions: list[str] = CAPTIONS, vocab_size: int = 120) -> Path:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(captions, trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls),
                                                                                                 ("[SEP]", sep)])
    BertTokenizerFast(tokenizer_object=tok).save_pretrained(str(folder))
    return folder


def make_bert_folder(folder: Path, hidden: int = 32) -> Path:
    """A tiny random BERT (no cross-attention: from_pretrained adds it) + tokenizer, as a downloaded model is."""
    from transformers import AutoTokenizer, BertConfig, BertLMHeadModel

    make_tokenizer_folder(folder)
    vocab = len(AutoTokenizer.from_pretrained(str(folder)))
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=64)
    torch.manual_seed(0)
    BertLMHeadModel(config).save_pretrained(str(folder))
    return folder


@dataclass
class Encoded:
    """The EncoderOutput fields the captioning head reads: per stream tokens (B, T, N, D)."""

    streams: tuple[str, ...]
    audio: torch.Tensor
    visual: torch.Tensor

    def tokens(self, s: str) -> torch.Tensor:
        return {"a": self.audio, "v": self.visual}[s]


def encoded(clips: int, segments: int = 3, dim: int = 16, seed: int = 0, streams=("a", "v")) -> Encoded:
    g = torch.Generator().manual_seed(seed)
    return Encoded(tuple(streams), torch.randn(clips, segments, 5, dim, generator=g),
                   torch.randn(clips, segments, 4, dim, generator=g))
