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
