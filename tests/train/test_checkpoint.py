"""Checkpoints: complete only with a verified manifest, pruned safely, refused when unsafe, and a failed
save leaves the previous one in charge."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from avpea_dist.fileio import sha256_file
from avpea_dist.train.checkpoint import (CheckpointError, find_resumable, install_checkpoint_engine,
                                         load_checkpoint, save_checkpoint, tag_for, verify)
from avpea_dist.train.engine import build_engine
from avpea_dist.train.loop import train_step

from trainkit import fake_batch, model_and_task, tiny_config


@pytest.fixture(scope="module")
def engine():
    from avpea_dist.runtime import world as avdist

    avdist.init_process_group(avdist.world_info_from_env(), "gloo", 60)
    cfg = tiny_config()
    torch.manual_seed(0)
    model, task = model_and_task(cfg)
    eng, _ = build_engine(model, cfg)
    install_checkpoint_engine(eng)
    eng.cfg, eng.task = cfg, task
    yield eng
    avdist.teardown()


def _step(engine, seed):
    return train_step(engine, [fake_batch(engine.cfg, seed)], engine.device, engine.task.loss)


def _trainable(engine):
    return {n: p.detach().clone() for n, p in engine.module.named_parameters() if p.requires_grad}


def test_save_prune_and_resume_pick_the_newest_complete(engine, tmp_path):
    root = tmp_path / "checkpoints"
    for step in range(1, 5):
        _step(engine, step)
        save_checkpoint(engine, root, step, {"step": step}, keep=2, protect={tag_for(1)})
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [tag_for(1), tag_for(3), tag_for(4)]
    assert (root / "latest").read_text().strip() == tag_for(4)
    manifest = json.loads((root / tag_for(4) / "manifest.json").read_text())
    assert all(sha256_file(root / tag_for(4) / n) == h for n, h in manifest["files"].items())
    # Only trainable weights are saved: no frozen backbone tensor in the model states.
    states = torch.load(root / tag_for(4) / "mp_rank_00_model_states.pt", weights_only=True)
    assert states["module"] and all(".adapters." in k or k.startswith("head.") for k in states["module"])

    (root / tag_for(4) / "manifest.json").unlink()  # a save that died before its manifest
    shutil.copytree(root / tag_for(3), root / tag_for(5))
    victim = root / tag_for(5) / "mp_rank_00_model_states.pt"
    victim.write_bytes(victim.read_bytes()[:-7] + b"garbage")  # bit rot after the save
    folder, passed = find_resumable(root)
    assert folder == root / tag_for(3)
    assert any("does not match its sha256" in p for p in passed) and any("manifest" in p for p in passed)
    with pytest.raises(CheckpointError, match="not usable"):
        load_checkpoint(engine, root / tag_for(5))


def test_round_trip_restores_weights_optimizer_and_rng(engine, tmp_path):
    root = tmp_path / "checkpoints"
    _step(engine, 7)
    save_checkpoint(engine, root, 10, {"step": 10, "marker": "x"}, keep=2)
    rng_at_save = torch.get_rng_state()
    expected_loss = _step(engine, 8).loss
    expected = _trainable(engine)
    torch.manual_seed(123)
    state = load_checkpoint(engine, root / tag_for(10))
    assert state["step"] == 10 and state["marker"] == "x" and state["world_size"] == 1
    assert torch.equal(torch.get_rng_state(), rng_at_save)
    assert _step(engine, 8).loss == expected_loss
    assert all(torch.equal(expected[n], p) for n, p in _trainable(engine).items())


def test_a_failed_save_names_the_folder_and_keeps_latest(engine, tmp_path):
    root = tmp_path / "checkpoints"
    save_checkpoint(engine, root, 1, {"step": 1}, keep=2)
    (root / tag_for(2)).write_text("a file where the checkpoint folder must go")  # a real OSError on write
    with pytest.raises(CheckpointError, match=str(root / tag_for(2))) as err:
        save_checkpoint(engine, root, 2, {"step": 2}, keep=2)
    assert "resumes from it" in str(err.value)
    assert (root / "latest").read_text().strip() == tag_for(1)
    assert verify(root / tag_for(1)) is None
    assert load_checkpoint(engine, root / tag_for(1))["step"] == 1


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        import os
        return (os.system, ("true",))  # harmless, but code all the same: weights_only must refuse it


def test_pickled_code_in_a_checkpoint_is_refused(engine, tmp_path):
    root = tmp_path / "checkpoints"
    save_checkpoint(engine, root, 1, {"step": 1}, keep=2)
    folder = root / tag_for(1)
    states = folder / "mp_rank_00_model_states.pt"
    torch.save({"module": {}, "payload": _RunsCodeWhenUnpickled()}, states)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][states.name] = sha256_file(states)  # a consistent manifest: only pickle safety refuses
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="refused by the safe loader"):
        load_checkpoint(engine, folder)
