"""Parameter groups, the schedule, and one real DeepSpeed step for each ablation switch."""

from __future__ import annotations

import math

import pytest
import torch

from avpea_dist.train.engine import deepspeed_config, lr_factor, param_groups

from trainkit import fake_batch, model_and_task, tiny_config


def test_only_trainable_parameters_reach_the_optimizer_in_four_groups():
    cfg = tiny_config("optim.lr_adapter=0.003", "optim.lr_head=0.0001", "optim.weight_decay=0.05")
    model, _ = model_and_task(cfg)
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    assert sorted(groups) == ["adapter_decay", "adapter_no_decay", "head_decay", "head_no_decay"]
    in_groups = {id(p) for g in groups.values() for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert in_groups == trainable and len(trainable) < len(list(model.parameters()))
    assert groups["adapter_decay"]["lr"] == 0.003 and groups["head_decay"]["lr"] == 0.0001
    assert groups["adapter_decay"]["weight_decay"] == 0.05 and groups["head_no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim == 1 for p in groups["adapter_no_decay"]["params"])  # biases, norms, gates


def test_linear_probe_trains_the_head_alone():
    cfg = tiny_config("model.adapters=false")
    groups = param_groups(model_and_task(cfg)[0], cfg)
    assert sorted(g["name"] for g in groups) == ["head_decay", "head_no_decay"]


def test_warmup_then_cosine_to_the_floor():
    assert lr_factor(0, 10, 100, 0.01) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.01) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100, 0.01) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, 0.01) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(100, 10, 100, 0.01) == pytest.approx(0.01)
    assert lr_factor(500, 10, 100, 0.01) == pytest.approx(0.01)  # past the end: stays at the floor
    assert lr_factor(0, 0, 100, 0.0) == pytest.approx(1.0)


def test_deepspeed_config_follows_the_config():
    cfg = tiny_config("optim.grad_accum=3", "optim.grad_clip=0.5", "dist.zero_stage=1", "dist.precision=fp32")
    ds = deepspeed_config(cfg)
    assert ds["gradient_accumulation_steps"] == 3 and ds["gradient_clipping"] == 0.5
    assert ds["zero_optimization"]["stage"] == 1 and ds["bf16"]["enabled"] is False
    assert ds["train_micro_batch_size_per_gpu"] == cfg.data.batch_size


@pytest.fixture(scope="module")
def world_of_one():
    from avpea_dist.runtime import world as avdist

    avdist.init_process_group(avdist.world_info_from_env(), "gloo", 60)
    yield
    avdist.teardown()


@pytest.mark.parametrize("switch", ["model.modalities=av", "model.modalities=audio", "model.modalities=visual",
                                    "model.adapters=false"])
def test_each_ablation_takes_a_real_step_and_leaves_the_backbone_frozen(world_of_one, switch):
    from avpea_dist.train.engine import build_engine
    from avpea_dist.train.loop import train_step

    cfg = tiny_config(switch, "optim.grad_accum=2")
    torch.manual_seed(0)
    model, task = model_and_task(cfg)
    engine, _ = build_engine(model, cfg)
    before = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
    r = train_step(engine, [fake_batch(cfg, 1), fake_batch(cfg, 2)], engine.device, task.loss)
    assert r.applied and math.isfinite(r.loss) and r.seen == 2 * cfg.data.batch_size
    after = dict(engine.module.named_parameters())
    frozen_same = all(torch.equal(before[n], p) for n, p in after.items() if not p.requires_grad)
    head_moved = any(not torch.equal(before[n], p) for n, p in after.items() if n.startswith("head."))
    assert frozen_same and head_moved
    if cfg.model.adapters:
        assert any(not torch.equal(before[n], p) for n, p in after.items() if ".adapters." in n)
