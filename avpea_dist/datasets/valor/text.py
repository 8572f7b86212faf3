"""The text side that ships with caption shards (where a run's text model comes from: ``textmodel.py``).

``save_text_folder`` trains a lowercase WordPiece vocabulary on the train captions (tokenizers'
``WordPieceTrainer`` behind ``BertPreTokenizer`` and the BERT normaliser), wraps it as transformers'
``BertTokenizerFast`` (in transformers 5 the one BERT tokenizer, on the tokenizers backend) and saves it with a
small random-init BERT (``BertConfig``: 2 layers, 128 wide, seeded) through ``save_pretrained``: the folder
loads with ``AutoTokenizer`` / ``AutoModel.from_pretrained`` exactly as a downloaded checkpoint does.

A run names its text model by a spec ('shards' = this folder, ``manifest.text.folder``; a folder path; a hub
name read from the local Hugging Face cache only): ``textmodel.resolve_text_model`` turns it into a source.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from ...extras import require
from ...fileio import temp_dir

TEXT_FOLDER = "text"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass(frozen=True)
class TextSpec:
    """The embedded text model: a WordPiece vocabulary and a tiny BERT, both from the train captions."""

    vocab_size: int = 4000
    """Upper bound of the WordPiece vocabulary (special tokens and characters included)."""
    hidden_size: int = 128
    layers: int = 2
    heads: int = 2
    intermediate_size: int = 512
    max_positions: int = 128
    """Longest token sequence the model takes ([CLS] and [SEP] included)."""
    seed: int = 0
    """Seed of the random-init weights."""


def train_tokenizer(captions: Iterable[str], spec: TextSpec = TextSpec()) -> Any:
    """-> a ``BertTokenizerFast`` whose WordPiece vocabulary is trained on ``captions`` (lowercased)."""
    require("text", "the VALOR text side (retrieval, captioning)")
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=spec.vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                        show_progress=False)
    tok.train_from_iterator(captions, trainer)
    # Built from the trained vocabulary, BERT's own class sets up BERT's normaliser, pre-tokeniser,
    # [CLS] ... [SEP] template and decoder: the pipeline of a real BERT checkpoint.
    vocab = dict(sorted(tok.get_vocab().items(), key=lambda kv: kv[1]))
    return BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=spec.max_positions)


def save_text_folder(folder: str | Path, captions: list[str], spec: TextSpec = TextSpec()) -> dict[str, Any]:
    """Train the tokenizer on ``captions``, init the tiny BERT and save both to ``folder`` (replaced as a whole,
    atomically); -> the manifest's ``text`` record (without ``folder``)."""
    require("text", "the VALOR text side (retrieval, captioning)")
    import torch
    from transformers import BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a one-file save: its bar is only noise in the build's output

    if not captions:
        raise ValueError("no train caption to train the text folder's tokenizer on")
    folder = Path(folder)
    tokenizer = train_tokenizer(captions, spec)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=spec.hidden_size, num_hidden_layers=spec.layers,
                        num_attention_heads=spec.heads, intermediate_size=spec.intermediate_size,
                        max_position_embeddings=spec.max_positions, pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = BertModel(config)
    tmp = temp_dir(f".{folder.name}.", folder.parent)  # not mkdtemp's 0700: runs copy it as it is
    try:
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        old = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"vocab_size": len(tokenizer), "trained_on": f"{len(captions)} train captions",
            "model": "BertModel, random init", **{k: v for k, v in asdict(spec).items() if k != "vocab_size"}}
