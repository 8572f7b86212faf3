"""Synthetic media every embedded set draws with: coloured patterns, tones, noise, mp4 writing, the finished-set marker.

The datasets' generators (``datasets/<name>/synth.py``) compose these into their own scenes; what they share
lives here so that no dataset package imports another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..fileio import atomic_open

COLOURS = {"red": (230, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 240), "yellow": (240, 230, 40),
           "magenta": (220, 40, 220), "cyan": (40, 220, 230), "white": (245, 245, 245),
           "orange": (250, 140, 20)}
ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
"""Characters of YouTube-like video ids."""
MARKER = "synth.json"
"""Written last into a finished set: its arguments and counts (a folder holding it with the same ones is reused)."""


@dataclass(frozen=True)
class SynthSpec:
    """How the mp4 files look; the defaults keep encoding and decoding fast, the benchmarks raise them."""

    size: int = 128
    fps: int = 4
    sample_rate: int = 16000
    channels: int = 1
    video_codec: str = "libx264"
    audio_codec: str = "aac"
    seconds: float = 10.0
    aac_fast: bool = False  # ffmpeg's fast AAC coder: ~3x cheaper encoding (the task demos' sets use it)


def tone(k: int, n: int) -> float:
    return 220.0 * (25.0 ** (k / max(n - 1, 1)))  # 220 Hz .. 5.5 kHz, spread over the mel scale


def paint(img: np.ndarray, box: tuple[int, int, int, int], colour: tuple[int, int, int], layout: str) -> None:
    """Draw a pattern of ``colour`` inside ``box`` = (top, bottom, left, right) of an (H, W, 3) float image, in
    place. Layouts: solid, bars (horizontal), columns, checker, square (a centred block), circle, frame (an
    outline), cross; cells are a quarter of the box so they survive downscaling to 64 px."""
    import numpy as np  # here, not at the top: `avpea --help` imports this module for its options
    top, bottom, left, right = box
    h, w = bottom - top, right - left
    y, x = np.mgrid[0:h, 0:w]
    cy, cx, cell = (h - 1) / 2, (w - 1) / 2, max(2, min(h, w) // 4)
    mask = {"solid": np.ones((h, w), bool), "bars": (y // cell) % 2 == 0, "columns": (x // cell) % 2 == 0,
            "checker": ((y // cell) + (x // cell)) % 2 == 0,
            "square": (abs(y - cy) < h * 0.3) & (abs(x - cx) < w * 0.3),
            "circle": (y - cy) ** 2 + (x - cx) ** 2 < (min(h, w) * 0.45) ** 2,
            "frame": (np.minimum(np.minimum(y, h - 1 - y), np.minimum(x, w - 1 - x)) < max(2, min(h, w) // 6)),
            "cross": (abs(y - cy) < h * 0.12) | (abs(x - cx) < w * 0.15)}[layout]
    img[top:bottom, left:right][mask] = np.asarray(colour, np.float32)


def background(size: int, rng: np.random.Generator) -> np.ndarray:
    import numpy as np
    tint = rng.uniform(30, 70, 3).astype(np.float32)
    return np.broadcast_to(tint, (size, size, 3)) + rng.normal(0, 6, (size, size, 1)).astype(np.float32)


def write_mp4(path: Path, frames: np.ndarray, audio: np.ndarray, spec: SynthSpec) -> None:
    """Encode RGB frames (T, H, W, 3) at ``spec.fps`` and mono audio (duplicated to ``spec.channels``; none
    when empty) into ``path`` atomically."""
    import numpy as np
    import av  # PyAV: only where a video is written (reading the CLI's options stays light)

    with atomic_open(path, "wb") as f, av.open(f, mode="w", format="mp4") as out:
        v = out.add_stream(spec.video_codec, rate=spec.fps)
        v.height, v.width = frames.shape[1:3]
        v.pix_fmt = "yuv420p"
        if spec.video_codec == "libx264":
            v.options = {"preset": "ultrafast", "threads": "1"}
        a = out.add_stream(spec.audio_codec, rate=spec.sample_rate) if len(audio) else None
        if a is not None:
            a.layout = "mono" if spec.channels == 1 else "stereo"
            if spec.aac_fast and spec.audio_codec == "aac":
                a.options = {"aac_coder": "fast"}
        for j, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = j, Fraction(1, spec.fps)
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
        if a is not None:
            step = a.codec_context.frame_size or 1024
            planes = np.repeat(audio[None], spec.channels, axis=0).astype(np.float32)
            for s in range(0, planes.shape[1], step):
                chunk = np.ascontiguousarray(planes[:, s:s + step])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=a.layout.name)
                frame.sample_rate, frame.pts = spec.sample_rate, s
                out.mux(a.encode(frame))
            out.mux(a.encode(None))


def finished_set(out: Path, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of a finished set in ``out`` made with the ``wanted`` arguments, or None (then it is made)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a folder for the dataset")
    marker = out / MARKER
    if not marker.is_file():
        return None
    try:
        done = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return None
    return done if isinstance(done, dict) and {k: done.get(k) for k in wanted} == wanted else None


def add_media_arguments(p: Any, size: int) -> None:
    """The options of how a synthetic set's mp4 files look (``SynthSpec``), shared by every set."""
    p.add_argument("--seed", type=int, default=0, help="everything follows from this seed")
    p.add_argument("--size", type=int, default=size, help=f"video side in pixels (default {size})")
    p.add_argument("--fps", type=int, default=4, help="video frame rate (default 4)")
    p.add_argument("--sample-rate", type=int, default=16000, help="audio sample rate (default 16000)")
    p.add_argument("--channels", type=int, choices=(1, 2), default=1, help="audio channels")


def media_options(args: Any) -> dict[str, Any]:
    """The parsed ``add_media_arguments`` options, as keyword arguments of a ``make``."""
    return {"seed": args.seed, "size": args.size, "fps": args.fps, "sample_rate": args.sample_rate,
            "channels": args.channels}
