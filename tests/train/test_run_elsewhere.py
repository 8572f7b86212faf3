"""The README's tour, from another folder (issue 22): a run trained with a relative data.shards and
train.out is evaluated from elsewhere with `avpea eval RUN/config.yaml`; once its shards are moved away,
eval says it needs them (and why the run folder's copy is not enough) and the run still loads with the
class names and preprocessing of its copy of the manifest."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from avpea_dist.cli import main

TINY = ["model.img_size=32", "model.modalities=visual", "train.steps=2", "train.eval_every=2", "train.ckpt_every=2",
        "data.batch_size=2", "data.num_workers=0", "data.shuffle_buffer=16", "eval.batch_size=8",
        "eval.final_split=none", "optim.warmup_steps=1", "train.progress=false", "dist.zero_stage=0"]


@pytest.mark.slow
def test_a_run_trained_with_relative_paths_works_from_another_folder(synth_shards, tmp_path, monkeypatch, capsys):
    from avpea_dist.apps.runmodel import load_run

    home, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copytree(synth_shards, home / "shards" / "synth")
    monkeypatch.chdir(home)
    assert main(["train", "avel_tiny", "data.shards=shards/synth", "train.out=runs/tour", *TINY]) == 0
    run = home / "runs" / "tour"
    capsys.readouterr()

    monkeypatch.chdir(elsewhere)
    argv = ["eval", str(run / "config.yaml"), "--checkpoint", str(run / "best" / "adapters.safetensors"),
            "--split", "val", "--json"]
    assert main(argv) == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 7 and result["split"] == "val"

    os.rename(home / "shards", home / "moved")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"data.shards='{home / 'shards' / 'synth'}' is not a folder" in err
    assert "keeps a copy of its shards' manifest" in err and "rebuild" not in err
    cfg, task, _ = load_run(run)
    assert task.manifest["classes"][-1] == "background" and len(task.manifest["classes"]) == 9
