"""A synthetic audio-visual event dataset in the AVE release layout, deterministic from a seed.

Each clip holds one event of class c over seconds [start, end): during it a class-specific visual pattern
(a colour and a layout, large and high-contrast: a random-init ViT sees colour and layout, not texture) is
shown AND a class-specific chord sounds (tones spread log-uniformly over the mel range). Background seconds
carry nothing, or a distractor with only the picture, only the sound, or a mismatched picture and sound of
other classes, so neither modality alone localises the event. Written as real mp4 files (H.264 + AAC by
default) and the AVE annotation/split files, so it enters the system through ``shards build ave`` exactly
as real data does.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Collection

import av
import numpy as np

from ...fileio import atomic_open, atomic_write_text
from .release import ANNOTATIONS, NUM_SEGMENTS, SPLIT_FILES

HEADER = "Category&VideoID&Quality&StartTime&EndTime"
_COLOURS = {"red": (230, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 240), "yellow": (240, 230, 40),
            "magenta": (220, 40, 220), "cyan": (40, 220, 230), "white": (245, 245, 245),
            "orange": (250, 140, 20)}
_LAYOUTS = ("bars", "columns", "square", "checker")
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


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


def class_names(num_classes: int) -> list[str]:
    names = list(_COLOURS)
    if not 2 <= num_classes <= len(names):
        raise ValueError(f"--classes={num_classes} must lie in [2, {len(names)}]")
    return [f"{names[k].capitalize()} {_LAYOUTS[k % 4]} (chord {k}, {_tone(k, num_classes):.0f} Hz)"
            for k in range(num_classes)]


def _tone(k: int, n: int) -> float:
    return 220.0 * (25.0 ** (k / max(n - 1, 1)))  # 220 Hz .. 5.5 kHz, spread over the mel scale


def _pattern(k: int, size: int, rng: np.random.Generator) -> np.ndarray:
    colour = np.array(list(_COLOURS.values())[k], np.float32) * rng.uniform(0.85, 1.0)
    img = np.full((size, size, 3), 40.0, np.float32)
    y, x = np.mgrid[0:size, 0:size]
    off = rng.integers(-size // 16, size // 16 + 1, 2)
    y, x = y + off[0], x + off[1]
    band = size // 4
    mask = {"bars": (y // band) % 2 == 0, "columns": (x // band) % 2 == 0,
            "square": (abs(y - size / 2) < size * 0.32) & (abs(x - size / 2) < size * 0.32),
            "checker": ((y // (size // 2)) + (x // (size // 2))) % 2 == 0}[_LAYOUTS[k % 4]]
    img[mask] = colour
    return img


def paint(img: np.ndarray, box: tuple[int, int, int, int], colour: tuple[int, int, int], layout: str) -> None:
    """Draw a pattern of ``colour`` inside ``box`` = (top, bottom, left, right) of an (H, W, 3) float image, in
    place. Layouts: solid, bars (horizontal), columns, checker, square (a centred block), circle, frame (an
    outline), cross; cells are a quarter of the box so they survive downscaling to 64 px."""
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


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    tint = rng.uniform(30, 70, 3).astype(np.float32)
    return np.broadcast_to(tint, (size, size, 3)) + rng.normal(0, 6, (size, size, 1)).astype(np.float32)


def _chord(k: int, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(sr) / sr
    f = _tone(k, n)
    wave = sum(np.sin(2 * np.pi * f * m * t + rng.uniform(0, 2 * np.pi)) for m in (1.0, 1.5))
    return (0.3 * wave).astype(np.float32)


def _clip_content(event: int, start: int, end: int, n: int, spec: SynthSpec,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """-> (RGB frames (T, S, S, 3) uint8, audio (NUM_SEGMENTS * sr,) float32)."""
    sr = spec.sample_rate
    seg_frames, seg_audio = [], []
    for i in range(NUM_SEGMENTS):
        visual = audible = None
        if start <= i < end:
            visual = audible = event
        else:
            kind = rng.integers(4)  # nothing / picture only / sound only / mismatched pair
            if kind == 1:
                visual = int(rng.integers(n))
            elif kind == 2:
                audible = int(rng.integers(n))
            elif kind == 3:
                visual, audible = (int(v) for v in rng.choice(n, 2, replace=False))
        frame = _pattern(visual, spec.size, rng) if visual is not None else _background(spec.size, rng)
        seg_frames.append(np.clip(frame, 0, 255).astype(np.uint8))
        sound = rng.normal(0, 0.01, sr).astype(np.float32)
        if audible is not None:
            sound += _chord(audible, n, sr, rng)
        seg_audio.append(sound)
    total = int(round(spec.seconds * spec.fps))
    frames = np.stack([seg_frames[min(int(j / spec.fps), NUM_SEGMENTS - 1)] for j in range(total)])
    audio = np.concatenate(seg_audio)
    n_audio = int(round(spec.seconds * sr))
    audio = np.pad(audio, (0, max(0, n_audio - len(audio))))[:n_audio]
    return frames, audio


def write_mp4(path: Path, frames: np.ndarray, audio: np.ndarray, spec: SynthSpec) -> None:
    """Encode RGB frames (T, H, W, 3) at ``spec.fps`` and mono audio (duplicated to ``spec.channels``; none
    when empty) into ``path`` atomically."""
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


def _video_id(rng: np.random.Generator) -> str:
    return "".join(_ID_CHARS[i] for i in rng.integers(len(_ID_CHARS), size=11))


@dataclass(frozen=True)
class _Record:
    id: str
    event: int
    start: int
    end: int


def _records(clips: int, seed: int, num_classes: int) -> list[_Record]:
    """Every clip's id, class and event seconds, without drawing its pictures or sound."""
    rng = np.random.default_rng(seed)
    events = rng.permutation(np.arange(clips) % num_classes)
    ids: list[str] = []
    while len(ids) < clips:  # unique ids; some start with '-' as real YouTube ids do
        vid = _video_id(rng)
        if vid not in ids:
            ids.append(vid)
    records = []
    for n in range(clips):
        clip_rng = np.random.default_rng([seed, n])  # each clip from its own stream: order-independent
        length = int(clip_rng.integers(2, 9))
        start = int(clip_rng.integers(0, NUM_SEGMENTS - length + 1))
        records.append(_Record(ids[n], int(events[n]), start, start + length))
    return records


def _write_clip(out: Path, n: int, rec: _Record, seed: int, num_classes: int, spec: SynthSpec) -> None:
    clip_rng = np.random.default_rng([seed, n])
    clip_rng.integers(2, 9), clip_rng.integers(0, NUM_SEGMENTS - (rec.end - rec.start) + 1)  # as _records drew
    frames, audio = _clip_content(rec.event, rec.start, rec.end, num_classes, spec, clip_rng)
    write_mp4(out / "AVE" / f"{rec.id}.mp4", frames, audio, spec)


def make_dataset(out: str | Path, clips: int, seed: int = 0, num_classes: int = 8,
                 spec: SynthSpec = SynthSpec(), progress: bool = False,
                 only: Collection[str] | None = None) -> dict[str, int]:
    """Write the annotation/split files and ``out/AVE/<id>.mp4`` (only the ids in ``only``, when given:
    a split build writes the videos its own shards need); -> clips per split."""
    if clips < 3:
        raise ValueError(f"--clips={clips} must be >= 3 (one per split at least)")
    out = Path(out)
    names = class_names(num_classes)
    records = _records(clips, seed, num_classes)
    from tqdm import tqdm
    todo = [n for n, r in enumerate(records) if only is None or r.id in only]
    for n in tqdm(todo, desc="synth", unit="clip", disable=not progress):
        _write_clip(out, n, records[n], seed, num_classes, spec)
    lines = [f"{names[r.event]}&{r.id}&good&{r.start}&{r.end}" for r in records]
    n_eval = max(1, round(0.15 * clips))
    parts = {"train": lines[:clips - 2 * n_eval], "val": lines[clips - 2 * n_eval:clips - n_eval],
             "test": lines[clips - n_eval:]}
    atomic_write_text(out / ANNOTATIONS, "\n".join([HEADER] + lines) + "\n")
    for split, name in SPLIT_FILES.items():
        atomic_write_text(out / name, "\n".join([HEADER] + parts[split]) + "\n")
    return {split: len(v) for split, v in parts.items()}
