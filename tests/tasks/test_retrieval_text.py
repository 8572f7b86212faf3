"""The text side: a tiny BERT saved with save_pretrained loads through the path real checkpoints take;
the caption codec picks one caption per clip per epoch deterministically and gives all of them in eval."""

import copy
import json

import pytest
import torch

from avpea_dist.errors import ConfigError
from avpea_dist.datasets.valor.codec import CaptionCodec, pick_caption
from avpea_dist.datasets.valor.textmodel import load_text_model, load_tokenizer, resolve_text_model, tokenize
from retrieval_kit import CAPTIONS, make_text_folder


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory):
    return make_text_folder(tmp_path_factory.mktemp("text") / "text")


def test_saved_folder_loads_offline_and_encodes(text_folder, tmp_path):
    tok, model = load_tokenizer(str(text_folder)), load_text_model(str(text_folder))
    ids, mask = tokenize(tok, CAPTIONS[:3], max_len=12)
    assert ids.dtype == mask.dtype == torch.int64 and ids.shape == mask.shape and ids.shape[0] == 3
    assert ids.shape[1] <= 12 and tok.convert_ids_to_tokens(int(ids[0, 0])) == "[CLS]"
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert hidden.shape == (*ids.shape, 32)
    # 'shards' resolves through the manifest's text.folder, beside the shards
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": "captions", "text": {"folder": "text"}}))
    (tmp_path / "text").symlink_to(text_folder)
    assert resolve_text_model("shards", tmp_path) == str(tmp_path / "text")


def test_missing_text_models_are_one_clear_error(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": "captions"}))
    with pytest.raises(ConfigError, match="names no text model folder"):
        resolve_text_model("shards", tmp_path)
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        load_tokenizer("no-such-model-anywhere")
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        resolve_text_model(str(tmp_path / "nothing" / "here"), None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot load its model"):
        load_text_model(str(tmp_path / "empty"))


def test_codec_one_caption_per_epoch_deterministic_all_in_eval(text_folder):
    meta = {"id": "--4gqARaEJE_0_10", "key": "test-00000---4gqARaEJE_0_10", "split": "test",
            "captions": CAPTIONS[:3]}
    key = meta["key"]
    train = CaptionCodec(str(text_folder), 16, train=True, seed=3, epoch=0)
    clone = copy.deepcopy(train)  # the same __getstate__ as a loader worker's pickling: no tokenizer inside
    assert clone._tokenizer is None
    assert train.parse(meta, key).chosen == clone.parse(meta, key).chosen  # pure function of (seed, epoch, key)
    picks = {pick_caption(3, e, key, 3) for e in range(30)}
    assert picks == {0, 1, 2}  # over epochs every caption gets its turn
    assert pick_caption(3, 5, key, 3) == pick_caption(3, 5, key, 3)
    batch = train.collate([train.parse(meta, key), train.parse({**meta, "captions": ["a dog barks"]}, "k2")])
    assert batch["text_ids"].shape[0] == 2 and batch["caption_video"].tolist() == [0, 1]
    assert batch["captions"][0] == CAPTIONS[:3]  # the references are all captions, even in training
    assert batch["clip_ids"] == ["--4gqARaEJE_0_10", "--4gqARaEJE_0_10"]  # verbatim ids (the json's 'id')
    evaluation = CaptionCodec(str(text_folder), 16, train=False)
    batch = evaluation.collate([evaluation.parse(meta, key), evaluation.parse({**meta, "captions": ["x y"]}, "k2")])
    assert batch["caption_video"].tolist() == [0, 0, 0, 1] and batch["text_mask"].shape == batch["text_ids"].shape
    empty = evaluation.collate([])
    assert empty["text_ids"].shape[0] == 0 and empty["caption_video"].numel() == 0


@pytest.mark.parametrize("captions", [None, [], "one string", ["ok", ""], ["ok", 3]])
def test_codec_rejects_malformed_captions(captions, text_folder):
    with pytest.raises(ValueError, match="sample 'k'"):
        CaptionCodec(str(text_folder), 16, train=False).parse({"captions": captions}, "k")
