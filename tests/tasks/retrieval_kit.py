"""Shared pieces of the retrieval tests: a tiny text model saved the way real checkpoints are."""

from __future__ import annotations

from pathlib import Path

# Real VALOR-32K captions (desc_test.json), kept short: the tokenizer is trained on them.
CAPTIONS = [
    "A man is talking while a car engine roars in the background.",
    "In a quiet room, a woman plays the piano and sings softly.",
    "A dog barks loudly while children laugh and play outside.",
    "Rain falls on the roof as thunder rumbles in the distance.",
    "a blue checkerboard on the left while a high chord plays",
]


def make_text_folder(folder: Path, captions: list[str] = CAPTIONS, hidden: int = 32) -> Path:
    """A WordPiece tokenizer trained on ``captions`` and a random-init 2-layer BERT, both written with
    ``save_pretrained`` into ``folder`` (config.json, model.safetensors, tokenizer files)."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(captions, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = BertTokenizerFast(tokenizer_object=tok)
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(folder)
    return folder
