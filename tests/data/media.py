"""Tiny real mp4 files for build tests (time is readable back from the pixels and from the sound), and the
samples of built shards read back."""

import json
import tarfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from avpea_dist.datasets.ave.synth import SynthSpec, write_mp4
from avpea_dist.fileio import sha256_file


def brightness_at(t: np.ndarray | float, seconds: float) -> np.ndarray | float:
    """The grey level (median pixel) of the frame shown at time ``t`` of a ``timed_mp4`` clip of ``seconds``."""
    return np.round(8 + 240 * np.asarray(t) / seconds)


def amplitude_at(t: np.ndarray | float, seconds: float) -> np.ndarray | float:
    """The 1 kHz tone's amplitude at time ``t`` of a ``timed_mp4`` clip of ``seconds``."""
    return 0.05 + 0.45 * np.asarray(t) / seconds


def timed_mp4(path: Path, seconds: float, fps: int = 4, size: int = 32, sample_rate: int = 16000,
              gop: int | None = None, aac_fast: bool = False) -> Path:
    """A clip whose frame at time t has grey level ``brightness_at(t)`` (plus a moving bar, so that frames
    differ in more than their level) and whose audio is a 1 kHz tone of amplitude ``amplitude_at(t)``.
    ``gop``: a keyframe every ``gop`` frames (H.264 without the audio), else the synth writer's encoding
    (``aac_fast``: its ~3x cheaper AAC coder, for clips of minutes)."""
    n = max(1, int(round(seconds * fps)))
    grey = brightness_at(np.arange(n) / fps, seconds).astype(np.uint8)
    frames = np.broadcast_to(grey[:, None, None, None], (n, size, size, 3)).copy()
    for j in range(n):
        frames[j, :, (j * 3) % size] = 255 - grey[j]
    if gop is not None:
        with av.open(str(path), mode="w") as out:
            v = out.add_stream("libx264", rate=fps)
            v.height = v.width = size
            v.pix_fmt, v.options = "yuv420p", {"preset": "ultrafast", "threads": "1",
                                               "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
            for j, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts, frame.time_base = j, Fraction(1, fps)
                out.mux(v.encode(frame))
            out.mux(v.encode(None))
        return path
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    audio = (amplitude_at(t, seconds) * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    write_mp4(path, frames, audio, SynthSpec(size=size, fps=fps, sample_rate=sample_rate, seconds=seconds,
                                                  aac_fast=aac_fast))
    return path


QUADRANTS = (40, 100, 160, 220)
"""Grey levels of the upright picture of a ``rotated_mp4`` clip: top-left, top-right, bottom-left, bottom-right
(four different levels tell all eight orientations apart)."""


def quadrant_levels(rgb: np.ndarray) -> list[float]:
    """The mean grey level of each quadrant of a picture (H, W, 3), in the order of ``QUADRANTS``."""
    h, w = rgb.shape[0] // 2, rgb.shape[1] // 2
    return [float(rgb[y:y + h, x:x + w].mean()) for y in (0, h) for x in (0, w)]


def rotated_mp4(path: Path, degrees: int, hflip: bool = False, seconds: float = 3.0, fps: int = 4,
                width: int = 48, height: int = 64, sound: bool = False) -> Path:
    """A clip as a phone leaves it: the upright picture (``width`` x ``height``, quadrants ``QUADRANTS``) is
    stored turned, with a display matrix that turns it back: per PyAV's ``set_display_rotation``, a player
    turns the stored picture ``degrees`` counter-clockwise and then mirrors it left-right if ``hflip``.
    H.264, with a 16 kHz AAC 1 kHz tone if ``sound``; the matrix lives in the mp4 track header (as phones
    write it)."""
    upright = np.empty((height, width, 3), np.uint8)
    for k, level in enumerate(QUADRANTS):
        y, x = divmod(k, 2)
        upright[y * height // 2:(y + 1) * height // 2, x * width // 2:(x + 1) * width // 2] = level
    stored = upright[:, ::-1] if hflip else upright  # undo the player's steps in reverse order
    stored = np.ascontiguousarray(np.rot90(stored, -(degrees // 90)))
    with av.open(str(path), mode="w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.height, v.width = stored.shape[:2]
        v.pix_fmt, v.options = "yuv420p", {"preset": "ultrafast", "threads": "1"}
        v.set_display_rotation(degrees, hflip=hflip)
        a = out.add_stream("aac", rate=16000, layout="mono") if sound else None
        for j in range(max(1, int(round(seconds * fps)))):
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts, frame.time_base = j, Fraction(1, fps)
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
        if a is not None:
            step = a.codec_context.frame_size or 1024
            wave = (0.3 * np.sin(2 * np.pi * 1000 * np.arange(int(seconds * 16000)) / 16000)).astype(np.float32)
            for s in range(0, len(wave), step):
                frame = av.AudioFrame.from_ndarray(wave[None, s:s + step].copy(), format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 16000, s
                out.mux(a.encode(frame))
            out.mux(a.encode(None))
    return path


def shard_samples(out: Path, m: dict) -> dict[str, list[dict]]:
    """Every sample's json per split, after checking each shard's hash, size, count and members."""
    found: dict[str, list[dict]] = {}
    for split, s in m["splits"].items():
        for sh in s["shards"]:
            path = out / sh["file"]
            assert sha256_file(path) == sh["sha256"] and path.stat().st_size == sh["bytes"]
            with tarfile.open(path) as tar:
                names = tar.getnames()
                metas = [json.loads(tar.extractfile(n).read()) for n in names if n.endswith(".json")]
            assert len(metas) == sh["samples"] and len(names) == 12 * sh["samples"]
            for meta in metas:
                assert {f"{meta['key']}.{x}" for x in [f"f{i}.jpg" for i in range(10)] + ["fbank.npy"]} <= set(names)
            found.setdefault(split, []).extend(metas)
    return found
