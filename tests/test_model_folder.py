"""The model as an artefact (issue 26): a run exported as a Hugging Face-layout folder, loaded with
``AVPEAModel.from_pretrained`` and by ``--model`` after the run folder and the shards are gone, with the same
answers; the compatibility checks; the software record of result.json and the model card."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = ["model.img_size=32", "data.batch_size=2", "train.steps=2", "train.eval_every=2", "train.ckpt_every=2",
        "optim.warmup_steps=1", "train.progress=false", "eval.batch_size=4"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}


def _train(config: str, shards: Path, run: Path, *extra: str) -> None:
    """One rank under torchrun, as a user starts it (the run writes RUN/model at its end)."""
    from avpea_dist.runtime import startup

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", "--master-port",
           str(startup.free_port()), "-m", "avpea_dist.train.entry", str(REPO / "configs" / config),
           f"data.shards={shards}", f"train.out={run}", *TINY, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _avpea(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "avpea_dist.cli", *args], capture_output=True, text=True,
                          timeout=600, env=_env(), cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _avpea_here(*args: str, cwd: Path, rc: int = 0) -> subprocess.CompletedProcess:
    """The real CLI entry point (``avpea_dist.cli.main``) in this process, in ``cwd``: the commands that run
    while the run folder and the shards still exist share this process's torch instead of importing it each
    (~10 s a process on 2 cores). What runs after they are deleted runs in a fresh process (``_avpea``), so
    nothing this process cached can stand in for a deleted file."""
    import contextlib
    import io

    from avpea_dist import cli

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(list(args))
    finally:
        os.chdir(here)
    assert code == rc, out.getvalue()[-3000:] + err.getvalue()[-3000:]
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def _clip(path: Path, seconds: int, seed: int) -> Path:
    from avpea_dist.datasets.ave.synth import SynthSpec, write_mp4

    rng = np.random.default_rng(seed)
    spec = SynthSpec(size=64, fps=2, seconds=float(seconds))
    frames = np.repeat(rng.integers(0, 256, (seconds, 64, 64, 3), dtype=np.uint8), spec.fps, axis=0)
    t = np.arange(spec.sample_rate) / spec.sample_rate
    wave = np.concatenate([0.3 * np.sin(2 * np.pi * rng.uniform(200, 3000) * t) for _ in range(seconds)])
    write_mp4(path, frames, wave.astype(np.float32), spec)
    return path


# ---------------------------------------------------------------------------------------------
# Quick


def test_the_software_record_names_versions_and_this_checkout():
    from avpea_dist.runtime.software import software_lines, software_record

    record = software_record()
    assert record["python"].count(".") == 2
    for name in ("torch", "deepspeed", "timm", "webdataset"):
        assert record["packages"][name][0].isdigit(), (name, record["packages"][name])
    if (REPO / ".git").exists():  # a checkout (a worktree has a .git file): its commit, 40 hex digits
        assert len(record["git"]["commit"]) == 40 and isinstance(record["git"]["dirty"], bool)
    json.dumps(record)  # plain JSON
    assert any(line.startswith("- torch ") for line in software_lines(record))


def test_incompatible_backbone_or_preprocessing_is_one_error_naming_both():
    from avpea_dist.config import ModelConfig
    from avpea_dist.models.pretrained import check_compatible

    saved = {"backbone": {"name": "vit_tiny_patch16_224"},
             "model": {"backbone": "vit_tiny_patch16_224", "img_size": 32, "mel_bins": 128},
             "preprocessing": {"frame_size": 48, "sample_rate": 16000, "img_size": 32}}
    check_compatible(saved, "m", model=ModelConfig(backbone="vit_tiny_patch16_224", img_size=32),
                     preprocessing={"frame_size": 48, "sample_rate": 16000})
    with pytest.raises(ValueError) as e:
        check_compatible(saved, "m", model=ModelConfig(backbone="vit_small_patch16_224", img_size=32), other="X")
    assert "model.backbone: 'vit_tiny_patch16_224' in the export, 'vit_small_patch16_224' in X" in str(e.value)
    with pytest.raises(ValueError, match=r"preprocessing.frame_size: 48 in the export, 96 in the shards S"):
        check_compatible(saved, "m", preprocessing={"frame_size": 96, "sample_rate": 16000}, other="the shards S")
    with pytest.raises(ValueError, match=r"preprocessing.sampling: 'first' in the export, 'even' in"):
        check_compatible(saved, "m", preprocessing={"frame_size": 48, "sampling": "even"})


def test_a_model_folder_is_written_whole_and_never_over_other_files(tmp_path):
    import torch

    from avpea_dist.models.pretrained import CONFIG_NAME, FORMAT, read_config, write_folder

    out = tmp_path / "model"
    config = {"format": FORMAT, "task": "avel"}
    write_folder(out, config, {"w": torch.ones(2)}, "# card", files={"train_config.yaml": "task: avel\n"})
    assert read_config(out)["task"] == "avel" and (out / "README.md").read_text() == "# card"
    write_folder(out, {**config, "task": "x"}, {"w": torch.zeros(2)}, "# new")  # an earlier export: replaced
    assert read_config(out)["task"] == "x" and not (out / "train_config.yaml").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folder left behind
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="is not an avpea model folder"):
        write_folder(other, config, {"w": torch.ones(2)}, "")
    assert (other / "cat.jpg").read_bytes() == b"x" and not (other / CONFIG_NAME).exists()
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        read_config(other)
    with pytest.raises(FileNotFoundError, match="does not exist; give an export folder"):
        from avpea_dist.models.model import AVPEAModel

        AVPEAModel.from_pretrained(str(tmp_path / "gone" / "model"))


# ---------------------------------------------------------------------------------------------
# End to end


@pytest.mark.slow
def test_avel_predict_from_the_exported_model_equals_the_run(synth_shards, tmp_path):
    """Train, predict --run, export; delete the run folder and the shards; predict --model gives the same
    timeline. Also: RUN/model written by training, result.json's software, the model card, eval --model,
    and the compatibility errors of from_pretrained and eval."""
    from avpea_dist.models.model import AVPEAModel

    shards, run, model = tmp_path / "shards", tmp_path / "run", tmp_path / "exported"
    shutil.copytree(synth_shards, shards)
    _train("avel_tiny.yaml", shards, run)
    result = json.loads((run / "result.json").read_text())
    assert result["software"]["packages"]["torch"][0].isdigit() and "entry" in result["command"]
    assert (run / "model" / "config.json").is_file()  # written at the end of training

    video = _clip(tmp_path / "clip.mp4", 12, 1)
    _avpea_here("predict", "--run", str(run), str(video), "--device", "cpu", cwd=tmp_path)
    by_run = json.loads((run / "predictions" / "clip.json").read_text())
    _avpea_here("export", "--run", str(run), "--out", str(model), cwd=tmp_path)
    assert {p.name for p in model.iterdir()} >= {"config.json", "model.safetensors", "README.md", "train_config.yaml"}
    config = json.loads((model / "config.json").read_text())
    assert config["task"] == "avel" and config["labels"] == json.loads((shards / "manifest.json").read_text())["classes"]
    assert config["backbone"] == {"name": "vit_tiny_patch16_224", "weights": "none", "included": False}
    card = (model / "README.md").read_text()
    assert "library_name: avpea-dist" in card and f"seed: {config['trained']['seed']}" in card
    assert "accuracy" in card and "- torch " in card

    evaluated = json.loads(_avpea_here("eval", "--model", str(model), "--shards", str(shards), "--json",
                                       cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert evaluated["accuracy"] == pytest.approx(result["test_score"], abs=1e-9)
    other = tmp_path / "other_shards"
    shutil.copytree(shards, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["preprocessing"]["frame_size"] = 2 * manifest["preprocessing"]["frame_size"]
    (other / "manifest.json").write_text(json.dumps(manifest))
    index = json.loads((other / "index.json").read_text())  # readers take the manifest's facts from here
    index["preprocessing"] = index["manifest"]["preprocessing"] = manifest["preprocessing"]
    (other / "index.json").write_text(json.dumps(index))
    proc = _avpea_here("eval", "--model", str(model), "--shards", str(other), cwd=tmp_path, rc=2)
    assert proc.returncode == 2 and "preprocessing.frame_size" in proc.stderr and str(other) in proc.stderr

    shutil.rmtree(run)
    shutil.rmtree(shards)
    shutil.rmtree(other)
    _avpea("predict", "--model", str(model), str(video), "--device", "cpu", "--out", str(tmp_path / "p"),
           cwd=tmp_path)
    by_model = json.loads((tmp_path / "p" / "clip.json").read_text())
    assert by_model["seconds"] == by_run["seconds"]

    loaded = AVPEAModel.from_pretrained(str(model))
    assert loaded.exported.task.name == "avel" and not loaded.training
    with pytest.raises(ValueError, match=r"model.backbone: 'vit_tiny_patch16_224' in the export, "
                                         r"'vit_small_patch16_224' in the overrides"):
        AVPEAModel.from_pretrained(str(model), overrides=["model.backbone=vit_small_patch16_224"])
    copy = tmp_path / "saved"
    loaded.save_pretrained(copy)  # the mixin's save: the same folder again
    assert json.loads((copy / "config.json").read_text()) == config


@pytest.mark.slow
def test_retrieval_search_from_the_exported_model_with_its_tokenizer_equals_the_run(valor_synth, tmp_path):
    """A text task: the export carries the shards' text folder (tokenizer + text model); after the run and
    the shards are deleted, search --model ranks the same clips with the same scores as search --run.
    The shards are a copy of the session's synthetic VALOR shards (tests/conftest.py), deleted here."""
    raw, shards, run, model = valor_synth / "raw", tmp_path / "shards", tmp_path / "run", tmp_path / "exported"
    shutil.copytree(valor_synth / "shards", shards)
    _train("retrieval_tiny.yaml", shards, run)
    videos = tmp_path / "videos"
    videos.mkdir()
    for v in sorted((raw / "videos").iterdir())[:4]:
        shutil.copy(v, videos / v.name)
    query = ["search", "--videos", str(videos), "--query", "a red square while a chord plays", "--json"]
    by_run = json.loads(_avpea_here(*query, "--run", str(run), cwd=tmp_path).stdout)
    _avpea_here("export", "--run", str(run), "--out", str(model), cwd=tmp_path)
    assert (model / "text" / "tokenizer.json").is_file() or any((model / "text").glob("tokenizer*"))
    shutil.rmtree(run)
    shutil.rmtree(shards)
    env_cache = tmp_path / "cache"
    os.environ["XDG_CACHE_HOME"] = str(env_cache)
    try:
        by_model = json.loads(_avpea(*query, "--model", str(model), cwd=tmp_path).stdout)
    finally:
        del os.environ["XDG_CACHE_HOME"]
    assert by_model["results"] == by_run["results"] and not by_model["reused"]
    assert str(env_cache) in by_model["index"] and not by_model["index"].startswith(str(model))


def _hand_made_run(tmp_path: Path, *overrides: str) -> Path:
    """A run folder as training leaves it (config.yaml, best/ export, the manifest's copy), built by hand
    with random adapters: what export reads, without training."""
    import torch

    from avpea_dist.config_load import dump_yaml, load_config
    from avpea_dist.models.model import build_model
    from avpea_dist.tasks.registry import build_task
    from avpea_dist.train.export import export_trainable

    run = tmp_path / "run"
    cfg = load_config(REPO / "configs" / "avel_tiny.yaml", ["model.img_size=32", "model.num_segments=2",
                                                              f"train.out={run}", f"data.shards={tmp_path / 'gone'}",
                                                              *overrides])
    run.mkdir()
    (run / "config.yaml").write_text(dump_yaml(cfg))
    manifest = {"schema": "avel", "classes": [f"c{k}" for k in range(9)], "preprocessing": {"frame_size": 32}}
    (run / "shards_manifest.json").write_text(json.dumps(manifest))
    torch.manual_seed(cfg.train.seed)
    task = build_task(cfg, manifest)
    model = build_model(cfg.model, task=task)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn_like(p))
    export_trainable(model, run / "best" / "adapters.safetensors", cfg.model, {"step": 1}, task.signature())
    return run


@pytest.mark.slow
def test_with_backbone_the_folder_carries_every_tensor_and_a_moved_weight_file_is_named(tmp_path):
    """--with-backbone: the frozen weights travel in model.safetensors (the same outputs, no weight source
    needed); without it, a run trained on a local weight file that is gone says so and takes its new place."""
    import timm
    import torch
    from safetensors.torch import save_file

    from avpea_dist.models.model import AVPEAModel
    from avpea_dist.train.modelfolder import export_run

    torch.manual_seed(3)
    donor = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    weights = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(weights))
    run = _hand_made_run(tmp_path, f"model.pretrained={weights}")
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (1, 2, 3, 32, 32), dtype=torch.uint8, generator=g)
    audio = torch.randn(1, 2, 128, 102, generator=g)

    full = export_run(run, tmp_path / "full", with_backbone=True)
    slim = export_run(run, tmp_path / "slim")
    assert (full / "model.safetensors").stat().st_size > 10 * (slim / "model.safetensors").stat().st_size
    ref = AVPEAModel.from_pretrained(str(slim))(frames, audio)
    moved = tmp_path / "elsewhere.safetensors"
    weights.rename(moved)
    assert torch.equal(AVPEAModel.from_pretrained(str(full))(frames, audio), ref)  # needs no weight file
    with pytest.raises(FileNotFoundError, match=r"trained on the backbone weights .*vit.safetensors.*backbone_weights"):
        AVPEAModel.from_pretrained(str(slim))
    assert torch.equal(AVPEAModel.from_pretrained(str(slim), backbone_weights=str(moved))(frames, audio), ref)
