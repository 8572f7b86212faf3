"""Every shipped config (configs/*.yaml, whatever tasks add later) builds its task and model and takes one
real optimizer step and one evaluation on CPU, at small inputs, with its own structure (backbone, adapters,
head, ZeRO stage, loss).

Batches come from the task's own ``example_batch`` (random media at the config's sizes, task fields made
by the task's codec from ``example_meta``), and the task is built on ``example_manifest``: no shards needed,
so a new task's configs are covered as soon as its task implements those two hooks (tasks/base.py).
"""

from __future__ import annotations

import glob
import math
import os

import pytest
import torch

from trainkit import REPO

CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml")))
SMALL = ["model.pretrained=none", "model.img_size=32", "model.mel_bins=32", "model.audio_frames=32",
         "data.batch_size=2", "data.num_workers=0", "train.progress=false"]


@pytest.fixture
def world_of_one():
    from avpea_dist.runtime import world as avdist

    avdist.init_process_group(avdist.world_info_from_env(), "gloo", 60)
    yield
    avdist.teardown()


def test_the_shipped_configs_are_found():
    names = {os.path.basename(p) for p in CONFIGS}
    assert {"avel_tiny.yaml", "avel_vitl.yaml"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.basename(p).removesuffix(".yaml"))
def test_every_shipped_config_takes_a_step_and_evaluates(world_of_one, path, tmp_path):
    from avpea_dist.config_load import load_config
    from avpea_dist.models.model import build_model
    from avpea_dist.tasks.registry import build_task, get_task
    from avpea_dist.train.engine import build_engine
    from avpea_dist.train.evaluate import evaluate_task
    from avpea_dist.train.loop import train_step

    cfg = load_config(path, [*SMALL, f"train.out={tmp_path / 'run'}", f"data.shards={tmp_path / 'shards'}"])
    task = build_task(cfg, get_task(cfg.task).example_manifest(cfg, tmp_path))
    torch.manual_seed(0)
    engine, _ = build_engine(build_model(cfg.model, task=task), cfg)
    before = {n: p.detach().clone() for n, p in engine.module.named_parameters() if p.requires_grad}
    group = [task.example_batch(cfg.data.batch_size, seed=i) for i in range(cfg.optim.grad_accum)]
    r = train_step(engine, group, engine.device, task.loss)
    assert r.applied and math.isfinite(r.loss) and r.seen == cfg.data.batch_size * cfg.optim.grad_accum
    moved = {n for n, p in engine.module.named_parameters() if p.requires_grad and not torch.equal(p, before[n])}
    assert any(n.startswith("head.") for n in moved), "the head did not train"
    if cfg.model.adapters:
        assert any(".adapters." in n for n in moved), "no adapter trained"
    m = evaluate_task(task, engine.module, [task.example_batch(2, seed=100, split="val")], engine.device)
    value = m[task.selection_metric]
    assert value is None or math.isfinite(value)
    assert m["samples"] == 2 and m["skipped"] == 0
