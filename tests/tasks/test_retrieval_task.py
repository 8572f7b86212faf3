"""RetrievalTask in one process: the trainer's evaluate_task on eval batches of the task's own codec (several captions per
clip), both poolings, against the metric computed directly from the head's embeddings; a clip seen twice is
an error, not a metric; the ablation heads use only their stream."""

import pytest
import torch

from avpea_dist.config import Config, ModelConfig
from avpea_dist.models.model import build_model
from avpea_dist.tasks.retrieval.config import RetrievalConfig
from avpea_dist.tasks.retrieval.head import fine_similarity
from avpea_dist.tasks.retrieval.metrics import retrieval_metrics
from avpea_dist.tasks.retrieval.task import RetrievalTask
from avpea_dist.train.evaluate import evaluate_task
from retrieval_kit import make_text_folder


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory):
    return str(make_text_folder(tmp_path_factory.mktemp("text") / "text"))


def _task(text_folder, pooling="mean", modalities="av"):
    cfg = Config(task="retrieval", model=ModelConfig(backbone="vit_tiny_patch16_224", pretrained="none", img_size=32,
                                                     bottleneck=8, modalities=modalities),
                 sections={"retrieval": RetrievalConfig(text_model=text_folder, embed_dim=16, pooling=pooling)})
    task = RetrievalTask(cfg, None)
    torch.manual_seed(0)
    return task, build_model(cfg.model, load_weights=False, task=task)


@pytest.mark.parametrize("pooling", ["mean", "fine"])
def test_evaluate_ranks_every_caption_of_every_clip(text_folder, pooling):
    task, model = _task(text_folder, pooling)
    batches = [task.example_batch(3, seed=s, split="test") for s in (1, 2)]
    m = evaluate_task(task, model, batches, torch.device("cpu"))
    captions = sum(len(c) for b in batches for c in b["captions"])
    assert m["samples"] == m["clips"] == 6 and m["captions"] == captions > 6 and m["skipped"] == 0
    assert model.training  # evaluate_task restores the mode
    with torch.no_grad():  # the same numbers straight from the head (in eval mode: no dropout)
        outs = [model.eval()(b) for b in batches]
    owner = torch.cat([o.caption_video + 3 * i for i, o in enumerate(outs)])
    if pooling == "mean":
        sim = torch.cat([o.text for o in outs]) @ torch.cat([o.clip for o in outs]).t()
    else:
        rows = [fine_similarity(o.text_tokens, o.text_mask, torch.cat([p.clip_tokens for p in outs])) for o in outs]
        sim = torch.cat(rows)
    assert m == {**retrieval_metrics(sim, owner), "samples": 6, "skipped": 0}


def test_a_clip_seen_twice_is_an_error(text_folder):
    task, model = _task(text_folder)
    batch = task.example_batch(2, seed=1, split="test")
    with pytest.raises(ValueError, match="more than once"):
        evaluate_task(task, model, [batch, batch], torch.device("cpu"))


def test_ablation_heads_project_only_their_stream(text_folder):
    for modalities, stream in (("audio", "a"), ("visual", "v")):
        task, model = _task(text_folder, modalities=modalities)
        assert set(model.head.proj) == {stream}
        batch = task.example_batch(2, split="train")
        r = task.loss(model(batch), batch)
        assert torch.isfinite(r.loss) and r.count == 2


def test_frozen_text_encoder_is_not_trained_nor_exported_and_stays_in_eval_mode(text_folder):
    from avpea_dist.train.export import trainable_state

    cfg = Config(task="retrieval", model=ModelConfig(backbone="vit_tiny_patch16_224", pretrained="none", img_size=32,
                                                     bottleneck=8),
                 sections={"retrieval": RetrievalConfig(text_model=text_folder, embed_dim=16, train_text=False)})
    model = build_model(cfg.model, load_weights=False, task=RetrievalTask(cfg, None)).train()
    exported = trainable_state(model)
    assert not any(k.startswith("head.text.") for k in exported)
    assert {"head.text_proj.weight", "head.logit_scale", "head.proj.a.weight", "head.proj.v.weight"} <= set(exported)
    assert not model.head.text.training and model.head.proj.training
