"""`avpea predict` on generated mp4s: a 10 s clip and a 35 s clip, a random-init tiny model from a run folder.

The reference probabilities come through the shard path itself (``build.encode_clip`` -> the loader's
``decode_sample``), not through the predict module's own decoding, so a preprocessing drift shows up.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from avpea_dist.config_load import dump_yaml, load_config
from avpea_dist.datasets.ave.synth import SynthSpec, class_names, write_mp4

REPO = Path(__file__).resolve().parent.parent
SIZE = 32


def _clip(path: Path, seconds: int, seed: int, audio: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    spec = SynthSpec(size=64, fps=2, seconds=float(seconds))
    # One random picture and tone per second: every second differs, so a misplaced window shows up.
    pics = rng.integers(0, 256, (seconds, 64, 64, 3), dtype=np.uint8)
    frames = np.repeat(pics, spec.fps, axis=0)
    t = np.arange(spec.sample_rate) / spec.sample_rate
    wave = np.concatenate([0.3 * np.sin(2 * np.pi * rng.uniform(200, 3000) * t) for _ in range(seconds)])
    write_mp4(path, frames, wave.astype(np.float32) if audio else np.zeros(0, np.float32), spec)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as training leaves it: config.yaml and best/adapters.safetensors (random adapters)."""
    from avpea_dist.models.model import build_model
    from avpea_dist.tasks.registry import build_task
    from avpea_dist.train.export import export_trainable

    run = tmp_path_factory.mktemp("run")
    cfg = load_config(REPO / "configs" / "avel_tiny.yaml", [f"model.img_size={SIZE}", f"train.out={run}",
                                                              f"data.shards={run / 'no-shards'}"])
    (run / "config.yaml").write_text(dump_yaml(cfg))
    torch.manual_seed(cfg.train.seed)
    task = build_task(cfg, None)
    model = build_model(cfg.model, task=task)
    with torch.no_grad():  # adapters away from their zero-gated start, so they matter
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn_like(p))
    export_trainable(model, run / "best" / "adapters.safetensors", cfg.model, {"step": 1}, task.signature())
    return run


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {"short": _clip(d / "short.mp4", 10, 1), "long": _clip(d / "long.mp4", 35, 2),
            "silent": _clip(d / "silent.mp4", 10, 3, audio=False)}


def _reference(run: Path, video: Path, frame_size: int = SIZE, jpeg_quality: int = 90) -> torch.Tensor:
    """Softmax of the first 10 seconds, through the shard build (at ``frame_size`` px, JPEG ``jpeg_quality``)
    and the training loader's decoding."""
    from avpea_dist.data.build import BuildOptions, encode_clip
    from avpea_dist.data.stream import collate, decode_sample
    from avpea_dist.tasks.avel.codec import AVELCodec
    from avpea_dist.data.tario import RawSample
    from avpea_dist.models.model import build_model
    from avpea_dist.tasks.registry import build_task
    from avpea_dist.train.export import load_trainable

    cfg = load_config(run / "config.yaml")
    opts = BuildOptions(frame_size=frame_size, jpeg_quality=jpeg_quality, min_seconds=0)
    status, members = encode_clip(str(video), {"id": "clip", "labels": [0] * 10}, opts)
    assert status == "ok", members
    codec = AVELCodec(cfg.avel.num_classes)
    sample = decode_sample(RawSample("clip", members), codec=codec, frame_size=frame_size, img_size=SIZE)
    batch = collate([sample], 0, SIZE, codec=codec)
    torch.manual_seed(cfg.train.seed)
    task = build_task(cfg, None)
    model = build_model(cfg.model, task=task)
    load_trainable(model, run / "best" / "adapters.safetensors", cfg.model, task.signature())
    with torch.inference_mode():
        return model.eval()(batch["frames"], batch["audio"])[0].softmax(-1)


@pytest.mark.slow
def test_predict_matches_the_model_on_the_shard_path(run_dir, videos, tmp_path):
    from avpea_dist.apps.predict import load_predictor, predict_videos

    predictor = load_predictor(run_dir / "config.yaml", run_dir / "best" / "adapters.safetensors", device="cpu",
                               batch_size=2)
    missing = tmp_path / "missing.mp4"
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("<html>404</html>")
    order = [videos["short"], missing, videos["long"], not_video, videos["silent"]]
    done, problems = predict_videos(predictor, [str(v) for v in order], tmp_path / "out")
    assert [Path(t["video"]).name for t in done] == ["short.mp4", "long.mp4"]
    assert len(problems) == 3 and all("\n" not in p for p in problems)
    assert "missing file" in problems[0] and "notes.mp4" in problems[1] and "no audio" in problems[2]

    for name, seconds in (("short", 10), ("long", 35)):
        data = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert set(data) == {"video", "seconds"}
        assert [s["t"] for s in data["seconds"]] == list(range(seconds))
        for s in data["seconds"]:
            assert s["label"] == s["top3"][0]["label"] and s["prob"] == s["top3"][0]["prob"]
            assert [x["prob"] for x in s["top3"]] == sorted((x["prob"] for x in s["top3"]), reverse=True)
        ref = _reference(run_dir, videos[name])  # the first window, as the shards would hold it
        got = torch.tensor([[dict((x["label"], x["prob"]) for x in s["top3"])[predictor.classes[k]]
                             for k in ref[t].argsort(descending=True)[:3].tolist()]
                            for t, s in enumerate(data["seconds"][:10])])
        want = ref.sort(-1, descending=True).values[:, :3]
        assert torch.allclose(got, want, atol=1e-4), (got, want)
        png = (tmp_path / "out" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000

    # The 35 s clip in windows of 10 (10, 10, 10, 5) equals one pass over single seconds: windows cover it all.
    frames_audio = __import__("avpea_dist.apps.predict", fromlist=["video_inputs"]).video_inputs(
        videos["long"], predictor.prep, SIZE)
    predictor.window_s = 1
    per_second = predictor.probabilities(*frames_audio)
    data = json.loads((tmp_path / "out" / "long.json").read_text())
    assert [s["prob"] for s in data["seconds"]] == pytest.approx(per_second.max(-1).values.tolist(), abs=1e-5)


@pytest.mark.slow
def test_predict_command_one_line_per_video(run_dir, videos, tmp_path, monkeypatch):
    """`avpea predict` through the real CLI entry point, in this process (a fresh one would spend ~10 s on 2
    cores importing torch again; the console script itself is tested in test_cli.py and test_install.py)."""
    import contextlib
    import io

    from avpea_dist import cli

    monkeypatch.chdir(tmp_path)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main(["predict", "--run", str(run_dir), str(videos["short"]), str(tmp_path / "gone.mp4"),
                         "--batch-size", "1"])
    p = subprocess.CompletedProcess([], code, stdout.getvalue(), stderr.getvalue())
    assert p.returncode == 1, p.stderr[-2000:]
    out = [line for line in p.stdout.splitlines() if line.strip()]
    assert len(out) == 1 and out[0].startswith(str(videos["short"])) and ": 10 s;" in out[0]
    errors = [line for line in p.stderr.splitlines() if line.startswith("avpea predict:")]
    assert len(errors) == 2 and "gone.mp4: skipped: missing file" in errors[0]
    assert (run_dir / "predictions" / "short.json").is_file() and (run_dir / "predictions" / "short.png").is_file()


# ---------------------------------------------------------------------------------------------
# A run folder used from elsewhere, long videos, and the pieces of both

NAMES = class_names(8) + ["background"]


def _manifest_copy(run: Path, classes: list[str] = NAMES, frame_size: int = 48, jpeg_quality: int = 75) -> None:
    """RUN/shards_manifest.json as training writes it: the shards' manifest (schema, classes, preprocessing
    as the AVE builder records it)."""
    from avpea_dist.data.build import preprocessing
    from avpea_dist.data.options import BuildOptions
    from avpea_dist.train.runfolder import RUN_MANIFEST

    prep = preprocessing(BuildOptions(frame_size=frame_size, jpeg_quality=jpeg_quality))
    (run / RUN_MANIFEST).write_text(json.dumps({"schema": "avel", "classes": classes, "preprocessing": prep}))


def test_run_facts_come_from_the_run_folder(tmp_path, monkeypatch, caplog):
    """Class names and preprocessing from the run folder's copy of the manifest, whatever the current folder
    and wherever the shards went; without a copy or shards: numbered classes and a warning saying why."""
    from avpea_dist.apps.predict import Preprocessing, run_facts, run_shards_manifest

    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir(), elsewhere.mkdir()
    _manifest_copy(run)
    monkeypatch.chdir(elsewhere)
    manifest, source = run_shards_manifest(run, "shards/synth")  # the run's relative data.shards: not here
    assert run_facts(manifest, source, 9, SIZE) == (NAMES, Preprocessing(48, 75, 16000))
    assert source.endswith("shards_manifest.json")

    (run / "shards_manifest.json").unlink()
    manifest, source = run_shards_manifest(run, "shards/synth")
    assert manifest is None and "no shards_manifest.json in" in source and "shards/synth" in source
    with caplog.at_level("WARNING"):
        assert run_facts(manifest, source, 9, SIZE) == ([f"class {k}" for k in range(9)], Preprocessing(SIZE))
    assert "no shards_manifest.json in" in caplog.text

    _manifest_copy(run, NAMES[:5])  # a manifest of other shards: its preprocessing, but no wrong names
    assert run_facts(*run_shards_manifest(run, "x"), 9, SIZE) == ([f"class {k}" for k in range(9)],
                                                                  Preprocessing(48, 75, 16000))


def test_find_video_and_progress_lines(tmp_path, monkeypatch, capsys):
    from avpea_dist.data.decode import DecodeError
    from avpea_dist.apps import predict as commands

    (tmp_path / "clips.mp4").mkdir()
    with pytest.raises(DecodeError, match="a folder, not a video file"):
        commands.find_video(tmp_path / "clips.mp4")
    with pytest.raises(DecodeError, match="missing file"):
        commands.find_video(tmp_path / "gone.mp4")
    monkeypatch.setattr(commands, "PROGRESS_EVERY_S", 0.0)
    with commands.Progress("talk.mp4", 3600) as progress:  # stderr is not a terminal here: lines, no bar
        for _ in range(3):
            progress.advance(1200)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("avpea predict: talk.mp4: 1200 of 3600 s (33%) after ")


def _run_elsewhere(run_dir: Path, tmp_path: Path) -> Path:
    """The fixture's run as a user's: trained on a relative data.shards, its manifest copy beside it; the
    shards themselves are not anywhere."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir / "best", run / "best")
    cfg = load_config(run_dir / "config.yaml", ["data.shards=shards/synth", "train.out=runs/avel_tiny"])
    (run / "config.yaml").write_text(dump_yaml(cfg))
    _manifest_copy(run)
    return run


@pytest.mark.slow
def test_predict_from_another_folder_uses_the_run_folder(run_dir, videos, tmp_path, monkeypatch):
    """`avpea predict --run RUN` (and --checkpoint/--config) from another folder: the class names and the
    48 px / JPEG 75 preprocessing of the run's shards, so the result equals the model on those shards."""
    import argparse

    from avpea_dist.apps.predict import load_predictor, predict_cmd

    run = _run_elsewhere(run_dir, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    args = argparse.Namespace(videos=[str(videos["short"])], run=str(run), checkpoint=None, config=None, out=None,
                              window=0, batch_size=8, device="cpu")
    assert predict_cmd(args) == 0
    data = json.loads((run / "predictions" / "short.json").read_text())
    assert {s["label"] for s in data["seconds"]} <= set(NAMES)
    ref = _reference(run, videos["short"], frame_size=48, jpeg_quality=75)
    got = torch.tensor([[dict((x["label"], x["prob"]) for x in s["top3"])[NAMES[k]]
                         for k in ref[t].argsort(descending=True)[:3].tolist()] for t, s in enumerate(data["seconds"])])
    assert torch.allclose(got, ref.sort(-1, descending=True).values[:, :3], atol=1e-4)

    predictor = load_predictor(run / "config.yaml", run / "best" / "adapters.safetensors", device="cpu")
    assert predictor.classes == NAMES and (predictor.prep.frame_size, predictor.prep.jpeg_quality) == (48, 75)


@pytest.mark.slow
def test_long_video_window_by_window(run_dir, tmp_path, monkeypatch, capsys):
    """A 3-minute video: decoded one batch of windows at a time, each batch through the model before the
    next is decoded (memory does not grow with the video), progress lines off a terminal, and the same
    timeline as the whole video at once."""
    from avpea_dist.data import decode_windows as module
    from avpea_dist.apps import predict as commands
    from tests.data.media import timed_mp4

    video = timed_mp4(tmp_path / "talk.mp4", 180.0, fps=1, size=32, aac_fast=True)
    predictor = commands.load_predictor(run_dir / "config.yaml", run_dir / "best" / "adapters.safetensors",
                                        device="cpu", batch_size=2)
    steps: list[tuple[str, int]] = []
    decode, forward = module.decode_windows, predictor.probabilities

    def spy_decode(*args, **kwargs):
        for frames, audio in decode(*args, **kwargs):
            steps.append(("decoded", len(frames)))
            yield frames, audio

    def spy_forward(frames, audio):
        steps.append(("model", len(frames)))
        return forward(frames, audio)

    monkeypatch.setattr(module, "decode_windows", spy_decode)
    monkeypatch.setattr(predictor, "probabilities", spy_forward)
    monkeypatch.setattr(commands, "PROGRESS_EVERY_S", 0.0)
    timeline = predictor.timeline(video)
    assert steps == [("decoded", 20), ("model", 20)] * 9
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("avpea predict:")]
    assert len(lines) == 8 and lines[0].startswith(f"avpea predict: {video}: 20 of 180 s (11%)")

    whole = forward(*commands.video_inputs(video, predictor.prep, SIZE))  # the whole video in one go
    assert [s["t"] for s in timeline["seconds"]] == list(range(180))
    assert [s["prob"] for s in timeline["seconds"]] == pytest.approx(whole.max(-1).values.tolist(), abs=1e-6)
    assert [s["label"] for s in timeline["seconds"]] == [predictor.classes[k] for k in whole.argmax(-1).tolist()]


def test_a_video_named_with_another_container_is_found_by_the_builders_rule(tmp_path):
    """`predict clip.mp4` when the downloader left clip.webm: the same rule as the shard builders."""
    from avpea_dist.data.decode import DecodeError
    from avpea_dist.apps.predict import find_video

    (tmp_path / "clip.webm").write_bytes(b"x")
    assert find_video(tmp_path / "clip.mp4") == tmp_path / "clip.webm"
    assert find_video(tmp_path / "clip") == tmp_path / "clip.webm"
    with pytest.raises(DecodeError, match="missing file"):
        find_video(tmp_path / "other.mp4")
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(DecodeError, match="a folder, not a video file"):
        find_video(tmp_path / "dir.mp4")
