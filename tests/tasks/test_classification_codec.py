"""Clip classification's codec and its checks against the shards' manifest, on real release labels.

The labels are excerpts of the real files: AudioSet's class_labels_indices.csv (rows 0-5, 13 and 451, as in
KkLearner/audioset) and VGGSound's vggsound.csv (rows with commas in their label, as in
Git-hossein/B.sc.-Audiocraft-module). The manifests are written the way datasets/audioset/__init__.py
documents the 'clips' schema: ``classes`` (ids in index order), parallel ``class_names``, ``multilabel``.
"""

from __future__ import annotations

import copy
import os
import pickle

import pytest
import torch

from avpea_dist.config_load import load_config
from avpea_dist.errors import ConfigError
from avpea_dist.tasks.classification.codec import ClipLabelCodec, class_keys, class_names

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

AUDIOSET = [("/m/09x0r", "Speech"), ("/m/05zppz", "Male speech, man speaking"),
            ("/m/02zsn", "Female speech, woman speaking"), ("/m/0ytgt", "Child speech, kid speaking"),
            ("/m/01h8n0", "Conversation"), ("/m/02qldy", "Narration, monologue"),
            ("/t/dd00135", "Children shouting"), ("/t/dd00088", "Gush")]
VGGSOUND = ["bee, wasp, etc. buzzing", "female speech, woman speaking", "people marching", "playing tennis",
            "race car, auto racing", "waterfall burbling"]


def audioset_manifest(**extra):
    return {"schema": "clips", "dataset": "audioset", "classes": [m for m, _ in AUDIOSET],
            "class_names": [n for _, n in AUDIOSET], "multilabel": True, "splits": {}, **extra}


def vggsound_manifest(**extra):
    return {"schema": "clips", "dataset": "vggsound", "classes": VGGSOUND, "class_names": VGGSOUND,
            "multilabel": False, "splits": {}, **extra}


def config(multilabel: bool, classes: int, *more: str):
    return load_config(os.path.join(REPO, "configs", "classification_tiny.yaml"),
                       [f"classification.multilabel={str(multilabel).lower()}",
                        f"classification.num_classes={classes}", *more])


def test_classes_and_names_come_from_the_manifest_in_index_order():
    m = audioset_manifest()
    assert class_keys(m)[7] == "/t/dd00088" and class_names(m)[1] == "Male speech, man speaking"
    assert class_names({"classes": VGGSOUND}) == VGGSOUND  # no class_names: the labels name themselves
    for bad in ({}, {"classes": []}, {"classes": ["a", 3]}, {"classes": ["a", "a"]}):
        with pytest.raises(ConfigError, match="rebuild the shards"):
            class_keys(bad)


def test_audioset_label_ids_become_a_multi_hot_row():
    codec = ClipLabelCodec(class_keys(audioset_manifest()), multilabel=True)
    row = codec.parse({"id": "--PJHxphWEs", "start": 30.0, "end": 40.0, "labels": ["/t/dd00088", "/m/09x0r"]}, "k")
    assert row.dtype == torch.float32 and row.tolist() == [1, 0, 0, 0, 0, 0, 0, 1]
    # A segment whose labels are all outside the class index is written by no builder; an empty list is a
    # clip of none of the classes, which binary cross-entropy can still learn from.
    assert codec.parse({"labels": []}, "k").sum() == 0
    batch = codec.collate([row, codec.parse({"labels": ["/m/02zsn"]}, "k")])
    assert batch["targets"].shape == (2, 8) and batch["targets"][1, 2] == 1
    assert codec.collate([])["targets"].shape == (0, 8)


def test_vggsound_labels_with_commas_are_one_class_each():
    codec = ClipLabelCodec(class_keys(vggsound_manifest()), multilabel=False)
    row = codec.parse({"id": "--Lj4Y_96f0", "start": 120.0, "end": 130.0, "labels": ["bee, wasp, etc. buzzing"]}, "k")
    assert row.tolist() == [1, 0, 0, 0, 0, 0]
    assert codec.parse({"labels": ["female speech, woman speaking"]}, "k").argmax() == 1


@pytest.mark.parametrize("labels, message", [
    (["/m/09x0r", "/m/0bt9lr"], r"labels \['/m/0bt9lr'\] are not classes of the shards' manifest"),
    ("/m/09x0r", "not a list of label strings"),
    ([0], "not a list of label strings"),
    (None, "not a list of label strings"),
])
def test_a_label_outside_the_manifest_or_a_malformed_list_is_a_codec_error(labels, message):
    codec = ClipLabelCodec(class_keys(audioset_manifest()), multilabel=True)
    with pytest.raises(ValueError, match=message):  # the stream skips such a sample and counts it
        codec.parse({"labels": labels}, "k")


def test_a_single_label_set_refuses_none_or_several_labels_naming_the_fix():
    codec = ClipLabelCodec(VGGSOUND, multilabel=False)
    with pytest.raises(ValueError, match="exactly one label per clip, this one has 2.*multilabel=true"):
        codec.parse({"labels": ["people marching", "playing tennis"]}, "k")
    with pytest.raises(ValueError, match="has 0"):
        codec.parse({"labels": []}, "k")
    assert codec.parse({"labels": ["people marching", "people marching"]}, "k").sum() == 1  # a repeat is one


def test_the_codec_pickles_for_loader_workers():
    codec = ClipLabelCodec(class_keys(audioset_manifest()), multilabel=True)
    pickle.dumps(codec)  # what a loader worker receives; its state comes back through the same __reduce_ex__
    again = copy.deepcopy(codec)  # path (copied, not unpickled: the source scan allows no unpickling)
    assert torch.equal(again.parse({"labels": ["/m/0ytgt"]}, "k"), codec.parse({"labels": ["/m/0ytgt"]}, "k"))


def test_the_task_checks_class_count_and_label_kind_against_the_manifest():
    from avpea_dist.tasks.classification.task import ClassificationTask

    task = ClassificationTask(config(True, 8), audioset_manifest())
    assert task.names[7] == "Gush" and task.metric_label == "mAP"
    assert ClassificationTask(config(False, 6), vggsound_manifest()).metric_label == "top-1 accuracy"
    with pytest.raises(ConfigError, match="num_classes=9 but the shards .* have 8 classes; set "
                                          "classification.num_classes=8"):
        ClassificationTask(config(True, 9), audioset_manifest())
    with pytest.raises(ConfigError, match="multilabel=false but the shards .* are multi-label; set "
                                          "classification.multilabel=true"):
        ClassificationTask(config(False, 8), audioset_manifest())
    with pytest.raises(ConfigError, match="does not say whether its clips are multi-label"):
        ClassificationTask(config(True, 8), {k: v for k, v in audioset_manifest().items() if k != "multilabel"})
    no_shards = ClassificationTask(config(True, 8), None)  # a model built without shards has no label map
    with pytest.raises(ConfigError, match="set data.shards"):
        no_shards.codec("test", 0)


def test_the_registry_refuses_shards_of_another_schema():
    from avpea_dist.tasks.registry import build_task

    with pytest.raises(ConfigError, match="task=classification reads shards of schema 'clips'.*holds schema 'avel'"):
        build_task(config(True, 8), {"schema": "avel", "classes": ["a"] * 8})


@pytest.mark.parametrize("key, value, message", [
    ("num_classes", "1", "must be >= 2"), ("head_hidden", "-1", ">= 0"), ("pooling", "attention", "choose one of"),
    ("dropout", "1.0", r"in \[0, 1\)"),
])
def test_a_bad_section_value_is_one_config_error_naming_the_key(key, value, message):
    with pytest.raises(ConfigError, match=f"classification.{key}.*{message}"):
        config(True, 8, f"classification.{key}={value}")
