"""Using a run: a video becomes the model's input exactly as the shard build + loader make a sample, with the
preprocessing recorded in the shards' manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avpea_dist.config_load import load_config
from avpea_dist.datasets.ave.synth import SynthSpec, write_mp4

REPO = Path(__file__).resolve().parent.parent


def test_media_from_video_equals_the_shard_path(tmp_path):
    from avpea_dist.data.build import BuildOptions, encode_clip
    from avpea_dist.data.decode import DecodeError
    from avpea_dist.data.stream import collate, decode_sample
    from avpea_dist.tasks.avel.codec import AVELCodec
    from avpea_dist.data.tario import RawSample
    from avpea_dist.apps.runmodel import media_from_video

    rng = np.random.default_rng(0)
    spec = SynthSpec(size=48, fps=2, seconds=6.0)  # shorter than 10 s: padded as the build pads it
    frames = np.repeat(rng.integers(0, 256, (6, 48, 48, 3), dtype=np.uint8), spec.fps, axis=0)
    wave = (0.3 * np.sin(np.arange(6 * spec.sample_rate) / 7.0)).astype(np.float32)
    video = tmp_path / "v.mp4"
    write_mp4(video, frames, wave, spec)
    cfg = load_config(REPO / "configs" / "avel_tiny.yaml", ["model.img_size=32"])
    manifest = {"preprocessing": {"frame_size": 48, "jpeg_quality": 80, "audio_windows": "exact", "min_seconds": 8}}
    got_frames, got_audio = media_from_video(video, cfg, manifest)

    opts = BuildOptions(frame_size=48, jpeg_quality=80, min_seconds=0)
    status, members = encode_clip(str(video), {"id": "v", "labels": [0] * 10}, opts)
    assert status == "ok", members
    codec = AVELCodec(9)
    batch = collate([decode_sample(RawSample("v", members), codec=codec, frame_size=48, img_size=32)], 0, 32,
                    codec=codec)
    assert got_frames.shape == (10, 3, 32, 32) and got_frames.dtype == torch.uint8
    assert torch.equal(got_frames, batch["frames"][0]) and torch.equal(got_audio, batch["audio"][0])
    with pytest.raises(DecodeError, match="missing file"):
        media_from_video(tmp_path / "gone.mp4", cfg, manifest)


def _run_folder(tmp_path, shards, classes, *, task_config="avel_tiny.yaml", text=False):
    """A run folder as training leaves it (config.yaml, the manifest's copy, an export file), by hand."""
    import json
    import shutil

    from avpea_dist.config_load import dump_yaml

    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "best" / "adapters.safetensors").write_bytes(b"")  # read only after the checks under test
    cfg = load_config(REPO / "configs" / task_config, [f"data.shards={shards}", f"train.out={run}"])
    (run / "config.yaml").write_text(dump_yaml(cfg))
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["classes"] = classes
    manifest["preprocessing"]["frame_size"] = 40
    if text:
        manifest["text"] = {"folder": "text"}
        shutil.copytree(shards, run / "shards_text")
    (run / "shards_manifest.json").write_text(json.dumps(manifest))
    return run, cfg


def test_the_run_folders_copy_of_the_manifest_wins(synth_shards, tmp_path, monkeypatch):
    from avpea_dist.apps.runmodel import build_options, manifest_for_config, run_manifest

    classes = [f"event {k}" for k in range(8)] + ["background"]
    run, cfg = _run_folder(tmp_path, synth_shards, classes, text=True)
    monkeypatch.chdir(tmp_path)  # the shards are still there: the copy is what the model was trained on
    m = run_manifest(run, cfg)
    assert m["classes"] == classes and build_options(cfg, m).frame_size == 40
    assert m["text"]["folder"] == str(run / "shards_text")
    assert manifest_for_config(run / "config.yaml", cfg)["classes"] == classes
    other = tmp_path / "elsewhere.yaml"
    other.write_text((run / "config.yaml").read_text())
    assert manifest_for_config(other, cfg)["classes"][0] != "event 0"  # not a run folder: the shards' own


def test_a_command_for_another_task_stops_before_the_model_is_built(synth_shards, tmp_path, monkeypatch):
    from avpea_dist.apps import runmodel

    run, _ = _run_folder(tmp_path, synth_shards, [f"c{k}" for k in range(9)])
    monkeypatch.setattr("avpea_dist.models.model.build_model", lambda *a, **k: pytest.fail("built a model"))
    with pytest.raises(ValueError, match="is a run of task avel; this command needs a run trained with task: "
                                         "captioning"):
        runmodel.load_run(run, task="captioning")


def test_a_silent_video_gets_advice_a_run_command_can_follow(tmp_path):
    from avpea_dist.apps.runmodel import media_from_video
    from avpea_dist.data.decode import DecodeError
    from tests.data.media import timed_mp4

    video = timed_mp4(tmp_path / "silent.mp4", 3.0, gop=4)  # H.264 without an audio stream
    manifest = {"preprocessing": {"frame_size": 32, "no_audio": "skip"}}
    with pytest.raises(DecodeError) as e:
        media_from_video(video, load_config(REPO / "configs" / "avel_tiny.yaml", ["model.img_size=32"]), manifest)
    assert "--no-audio" not in str(e.value) and "sound track" in str(e.value)
    frames, audio = media_from_video(video, load_config(REPO / "configs" / "avel_tiny.yaml",
                                                        ["model.img_size=32", "model.modalities=visual"]), manifest)
    assert frames.shape == (10, 3, 32, 32)  # a model that never hears the audio takes the silent video
