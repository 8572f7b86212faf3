"""Caption decoding: greedy equals beam 1, beam search beats greedy where it should, the scratch decoder's
shared-memory attention equals one row at a time, and the HF decoder loads from a saved folder."""

import math
from types import SimpleNamespace

import pytest
import torch

from avpea_dist.tasks.captioning.decoder import HFDecoder, ScratchDecoder
from avpea_dist.tasks.captioning.decoding import beam_search, greedy, sequence_logprob
from avpea_dist.tasks.captioning.head import CaptioningHead, TextSpec, caption_loss
from captioning_helpers import encoded, make_bert_folder

BOS, EOS = 2, 3


def section(**changes):
    cfg = dict(decoder="scratch", layers=2, width=32, heads=4, max_len=12, dropout=0.0)
    cfg.update(changes)
    return SimpleNamespace(**cfg)


def scratch_head(seed=0, **changes) -> CaptioningHead:
    torch.manual_seed(seed)
    head = CaptioningHead(16, ("a", "v"), 3, TextSpec(40, BOS, EOS, 0), section(**changes))
    with torch.no_grad():  # random weights rarely end a caption: make [SEP] likely enough to matter
        head.decoder.lm.bias[EOS] += 2.0
    return head.eval()


def test_greedy_equals_beam_one_on_a_real_decoder():
    head = scratch_head()
    for seed in range(3):
        enc = encoded(5, seed=seed)
        memory = head.memory(enc)
        cache = head.decoder.prepare(memory)

        def step(tokens, clips):
            return torch.log_softmax(head.decoder(tokens, head.decoder.select(cache, clips))[:, :, -1], -1)

        g = greedy(step, 5, bos=BOS, eos=EOS, max_len=12)
        b = beam_search(step, 5, bos=BOS, eos=EOS, max_len=12, beam=1)
        assert g == b
        assert any(len(seq) < 11 for seq in g) and all(EOS not in seq and BOS not in seq for seq in g)
        assert head.generate(enc, beam=1, length_penalty=1.0) == g  # the head's path is the same code


def table_step(table):
    """A next-token model that looks only at the last token: table[last] = probabilities over 5 tokens."""
    def step(tokens, clips):
        last = tokens[:, :, -1]
        return torch.log(torch.tensor(table, dtype=torch.float64))[last]
    return step


def test_beam_finds_a_better_caption_than_greedy():
    # tokens: 0 a, 1 b, 2 [CLS], 3 [SEP], 4 c. Greedy takes 'a' (0.5) but then ends with 0.3 only;
    # 'b' (0.4) ends with 0.95: the beam finds 'b' (log 0.38 > log 0.175).
    table = [[0.2, 0.2, 0.0, 0.35, 0.25], [0.01, 0.01, 0.0, 0.95, 0.03], [0.5, 0.4, 0.0, 0.1, 0.0],
             [0.2, 0.2, 0.0, 0.4, 0.2], [0.2, 0.2, 0.0, 0.4, 0.2]]
    step = table_step(table)
    g = greedy(step, 2, bos=BOS, eos=EOS, max_len=6)
    b = beam_search(step, 2, bos=BOS, eos=EOS, max_len=6, beam=3, length_penalty=1.0)
    assert g == [[0], [0]]  # greedy: 'a', then [SEP]
    assert b == [[1], [1]]
    score = lambda seq: sequence_logprob(step, seq, bos=BOS, eos=EOS)  # noqa: E731
    assert score(b[0]) == pytest.approx(math.log(0.4 * 0.95))
    assert score(b[0]) > score(g[0])


def test_beam_respects_max_len_and_length_penalty():
    # A model that (almost) never ends: the caption is cut at max_len tokens in all, [CLS] included.
    table = [[0.6, 0.4, 0.0, 0.0, 0.0]] * 5
    step = table_step([[p + 1e-12 for p in row] for row in table])
    out = beam_search(step, 1, bos=BOS, eos=EOS, max_len=5, beam=2)
    assert out == [[0, 0, 0, 0]]
    # Long captions pay less per token with a higher length penalty: 'a a [SEP]' vs '[SEP]'.
    table = [[0.5, 0.0, 0.0, 0.5, 0.0], [0.5, 0.0, 0.0, 0.5, 0.0], [0.45, 0.0, 0.0, 0.55, 0.0],
             [0.5, 0.0, 0.0, 0.5, 0.0], [0.5, 0.0, 0.0, 0.5, 0.0]]
    step = table_step(table)
    short = beam_search(step, 1, bos=BOS, eos=EOS, max_len=6, beam=3, length_penalty=0.0)
    longer = beam_search(step, 1, bos=BOS, eos=EOS, max_len=6, beam=3, length_penalty=2.0)
    assert short == [[]] and len(longer[0]) > 0


def test_scratch_decoder_rows_share_memory_exactly():
    torch.manual_seed(0)
    dec = ScratchDecoder(30, 32, 2, 4, 10, 0.0).eval()
    memory = torch.randn(2, 7, 32)
    tokens = torch.randint(0, 30, (2, 3, 6))
    cache = dec.prepare(memory)
    together = dec(tokens, cache)
    for r in range(3):
        alone = dec(tokens[:, r:r + 1], cache)[:, 0]
        torch.testing.assert_close(together[:, r], alone, atol=1e-5, rtol=1e-5)
    # causal: the logits of a prefix do not depend on later tokens
    torch.testing.assert_close(dec(tokens[:, :, :3], cache), together[:, :, :3], atol=1e-5, rtol=1e-5)


def test_training_forward_and_loss_reach_every_trainable_part():
    head = scratch_head().train()
    enc = encoded(3)
    batch = {"text_ids": torch.tensor([[BOS, 5, 6, EOS, 0], [BOS, 7, EOS, 0, 0], [BOS, 8, 9, 10, EOS]]),
             "caption_video": torch.tensor([2, 0, 1])}
    batch["text_mask"] = (batch["text_ids"] != 0).long()
    logits = head(enc, batch)
    assert logits.shape == (3, 4, 40)
    loss, hits, tokens = caption_loss(logits, batch, label_smoothing=0.1)
    assert tokens == 3 + 2 + 4 and 0 <= int(hits) <= tokens
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in head.named_parameters()), \
        [n for n, p in head.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]


def test_ablation_memory_has_only_the_present_stream():
    torch.manual_seed(0)
    head = CaptioningHead(16, ("a",), 3, TextSpec(40, BOS, EOS, 0), section())
    enc = encoded(2, streams=("a",))
    assert head.memory(enc).shape == (2, 3 * 5, 32)
    assert set(head.memory.proj) == {"a"}


def test_hf_decoder_loads_from_a_saved_folder_and_decodes(tmp_path):
    folder = make_bert_folder(tmp_path / "bert")
    torch.manual_seed(0)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    text = TextSpec(len(tok), tok.cls_token_id, tok.sep_token_id, tok.pad_token_id)
    head = CaptioningHead(16, ("a", "v"), 3, text, section(decoder=str(folder))).eval()
    assert isinstance(head.decoder, HFDecoder) and head.decoder.lm.config.add_cross_attention
    assert head.decoder.width == 32
    # the checkpoint's own weights were loaded (only cross-attention is new)
    from safetensors.torch import load_file

    saved = load_file(str(folder / "model.safetensors"))
    key = "bert.embeddings.word_embeddings.weight"
    torch.testing.assert_close(head.decoder.lm.state_dict()[key], saved[key])
    enc = encoded(3)
    g = head.generate(enc, beam=1, length_penalty=1.0)
    memory = head.memory(enc)

    def step(tokens, clips):
        return torch.log_softmax(head.decoder(tokens, head.decoder.select(memory, clips))[:, :, -1], -1)

    assert beam_search(step, 3, bos=text.bos, eos=text.eos, max_len=12, beam=1) == g
    assert len(head.generate(enc, beam=3, length_penalty=1.0)) == 3
    ids = tok(["a red disc", "a dog barks twice"], padding=True, return_tensors="pt")
    batch = {"text_ids": ids["input_ids"], "text_mask": ids["attention_mask"], "caption_video": torch.tensor([0, 2])}
    head.train()
    loss, _, _ = caption_loss(head(enc, batch), batch)
    loss.backward()
    cross = head.decoder.lm.bert.encoder.layer[0].crossattention.self.query.weight
    assert cross.grad is not None and cross.grad.abs().sum() > 0


def test_hf_decoder_missing_model_is_one_clear_error(tmp_path):
    with pytest.raises((FileNotFoundError, ValueError), match="nothing-here"):
        HFDecoder(str(tmp_path / "nothing-here"))
