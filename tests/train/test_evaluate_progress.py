"""Evaluation shows its progress (runtime/progress.py): a line every period off a terminal, one at the end."""

from __future__ import annotations

import logging

import pytest
import torch

from avpea_dist.runtime import progress

from trainkit import fake_batch, model_and_task, tiny_config


@pytest.mark.slow
def test_evaluation_reports_its_progress(caplog, monkeypatch):
    from avpea_dist.train.evaluate import evaluate_task

    cfg = tiny_config()
    model, task = model_and_task(cfg, load_weights=False)
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    caplog.set_level(logging.INFO, logger="avpea_dist.progress")
    m = evaluate_task(task, model, [fake_batch(cfg, 1), fake_batch(cfg, 2)], torch.device("cpu"), split="val")
    assert m["samples"] == 2 * cfg.data.batch_size
    lines = [r.getMessage() for r in caplog.records if r.name == "avpea_dist.progress"]
    assert lines[0].startswith("evaluate val: 1 of 2 batch (50%) after") and lines[-1].startswith("evaluate val: done, 2 of 2 batch (100%)")
