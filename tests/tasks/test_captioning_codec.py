"""The captions codec (``datasets/valor/codec.py``) as captioning uses it: one caption per clip per epoch as a pure function of (seed, epoch, key), every
reference kept for evaluation, tokenised in the loader with [CLS] ... [SEP] within max_len, bad records
refused with their reason, and a codec that pickles without its tokenizer."""

import copy
import pickle

import pytest
import torch

from avpea_dist.datasets.valor.codec import CaptionCodec, pick_caption
from avpea_dist.tasks.captioning.tokenizer import load_tokenizer
from captioning_helpers import CAPTIONS, make_tokenizer_folder


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return str(make_tokenizer_folder(tmp_path_factory.mktemp("tok")))


META = {"id": "-abc_Def-12_30_40", "key": "test-00003--abc_Def-12_30_40", "split": "test", "captions": CAPTIONS[:3]}


def test_training_picks_one_caption_per_epoch_as_a_pure_function(tok_dir):
    key = META["key"]
    picks = [CaptionCodec(tok_dir, 30, train=True, seed=7, epoch=e).parse(META, key).chosen for e in range(12)]
    assert all(len(p) == 1 and p[0] in CAPTIONS[:3] for p in picks)
    assert len({p[0] for p in picks}) > 1  # epochs see different captions
    again = [CaptionCodec(tok_dir, 30, train=True, seed=7, epoch=e).parse(META, key).chosen for e in range(12)]
    assert picks == again  # exact resume: same seed, epoch, key -> same caption
    assert pick_caption(7, 3, key, 3) == CAPTIONS[:3].index(picks[3][0])
    other_seed = [CaptionCodec(tok_dir, 30, train=True, seed=8, epoch=e).parse(META, key).chosen for e in range(12)]
    assert other_seed != picks


def test_eval_keeps_every_reference_and_tokenises_in_collate(tok_dir):
    codec = CaptionCodec(tok_dir, 8, train=False)
    a = codec.parse(META, META["key"])
    b = codec.parse({"id": "x", "captions": [CAPTIONS[3]]}, "k2")
    assert a.clip_id == "-abc_Def-12_30_40" and a.captions == a.chosen == CAPTIONS[:3]
    batch = codec.collate([a, b])
    assert batch["text_ids"].shape == (4, 8) and batch["text_ids"].dtype == torch.int64
    assert batch["caption_video"].tolist() == [0, 0, 0, 1]
    assert batch["captions"] == [CAPTIONS[:3], [CAPTIONS[3]]] and batch["clip_ids"] == ["-abc_Def-12_30_40", "x"]
    tok = load_tokenizer(tok_dir)
    ids, mask = batch["text_ids"], batch["text_mask"]
    assert (ids[:, 0] == tok.cls_token_id).all()
    last = mask.sum(1) - 1  # every row ends with [SEP], cut ones included
    assert (ids[torch.arange(4), last] == tok.sep_token_id).all()
    assert tok.decode(ids[0], skip_special_tokens=True).startswith("a blue checker")


def test_empty_batch_and_pickling(tok_dir):
    codec = CaptionCodec(tok_dir, 30, train=True)
    codec.collate([codec.parse(META, "k")])  # loads the tokenizer
    pickle.dumps(codec)  # a loader worker gets a pickled copy; its state comes back the same way:
    clone = copy.deepcopy(codec)  # (copied, not unpickled: the source scan allows no pickle.loads)
    assert clone._tokenizer is None and clone.collate([clone.parse(META, "k")])["text_ids"].shape[0] == 1
    empty = codec.collate([])
    assert empty["text_ids"].shape[0] == 0 and empty["caption_video"].shape == (0,) and empty["captions"] == []


@pytest.mark.parametrize("captions, reason", [(None, "non-empty list"), ([], "non-empty list"), ("a dog", "list"),
                                              (["ok", ""], "empty or not text"), (["ok", 3], "empty or not text")])
def test_bad_records_raise_value_error_with_the_reason(tok_dir, captions, reason):
    with pytest.raises(ValueError, match=reason):
        CaptionCodec(tok_dir, 30, train=False).parse({"id": "v", "captions": captions}, "k")


def test_missing_tokenizer_is_one_clear_error(tmp_path):
    with pytest.raises((FileNotFoundError, ValueError), match="tokenizer"):
        load_tokenizer(str(tmp_path / "none"))
