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

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection

from ...data.builder import SynthSource
from ...data.synthmedia import (COLOURS, ID_CHARS, MARKER, SynthSpec, add_media_arguments, background, media_options,
                                tone, write_mp4)
from ...fileio import atomic_write_json, atomic_write_text
from .release import ANNOTATIONS, NUM_SEGMENTS, SPLIT_FILES

HEADER = "Category&VideoID&Quality&StartTime&EndTime"
_LAYOUTS = ("bars", "columns", "square", "checker")


def class_names(num_classes: int) -> list[str]:
    names = list(COLOURS)
    if not 2 <= num_classes <= len(names):
        raise ValueError(f"--classes={num_classes} must lie in [2, {len(names)}]")
    return [f"{names[k].capitalize()} {_LAYOUTS[k % 4]} (chord {k}, {tone(k, num_classes):.0f} Hz)"
            for k in range(num_classes)]


def _pattern(k: int, size: int, rng: np.random.Generator) -> np.ndarray:
    import numpy as np  # here, not at the top: `avpea --help` imports this module for its options
    colour = np.array(list(COLOURS.values())[k], np.float32) * rng.uniform(0.85, 1.0)
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


def _chord(k: int, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    import numpy as np
    t = np.arange(sr) / sr
    f = tone(k, n)
    wave = sum(np.sin(2 * np.pi * f * m * t + rng.uniform(0, 2 * np.pi)) for m in (1.0, 1.5))
    return (0.3 * wave).astype(np.float32)


def _clip_content(event: int, start: int, end: int, n: int, spec: SynthSpec,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """-> (RGB frames (T, S, S, 3) uint8, audio (NUM_SEGMENTS * sr,) float32)."""
    import numpy as np
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
        frame = _pattern(visual, spec.size, rng) if visual is not None else background(spec.size, rng)
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


def _video_id(rng: np.random.Generator) -> str:
    return "".join(ID_CHARS[i] for i in rng.integers(len(ID_CHARS), size=11))


@dataclass(frozen=True)
class _Record:
    id: str
    event: int
    start: int
    end: int


def _records(clips: int, seed: int, num_classes: int) -> list[_Record]:
    """Every clip's id, class and event seconds, without drawing its pictures or sound."""
    import numpy as np
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
    import numpy as np
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


class AveSynth(SynthSource):
    """``avpea shards synth [ave]`` and ``avpea shards build synth``: the AVE-layout set of the AVEL demo."""

    build_alias = "synth"
    default = True  # `shards synth --out DIR` wrote this layout before other sets existed

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--clips", type=int, default=480, help="number of clips (default 480)")
        parser.add_argument("--classes", type=int, default=8, help="event classes (2-8; background is added)")
        add_media_arguments(parser, size=128)

    def options(self, args: Any) -> dict[str, Any]:
        return {"clips": args.clips, "classes": args.classes, **media_options(args)}

    def make(self, out: Path, progress: bool = False, **options: Any) -> dict[str, Any]:
        """Write the set; a folder holding the same set (its ``synth.json``) gets only its missing videos."""
        out, s = Path(out), _settings(**options)
        wanted, marker = {"dataset": "ave", **s}, out / MARKER
        only = None
        if marker.is_file() and json.loads(marker.read_text()) == wanted:
            only = {r.id for r in _records(s["clips"], s["seed"], s["classes"])
                    if not (out / "AVE" / f"{r.id}.mp4").is_file()}
        else:
            marker.unlink(missing_ok=True)  # until every video of the new set is written
        counts = make_dataset(out, s["clips"], s["seed"], s["classes"], _spec(s), progress=progress, only=only)
        atomic_write_json(marker, wanted)
        return counts

    def lazy(self, out: Path, **options: Any) -> Callable[[list[Any]], None]:
        """Every task writes the annotation files (the same bytes) now, then only the videos its shards need
        (videos are deterministic per clip, so any task can write any of them)."""
        out, s = Path(out), _settings(**options)
        wanted, marker = {"dataset": "ave", **s}, out / MARKER
        if marker.is_file() and json.loads(marker.read_text()) != wanted:
            raise ValueError(f"{out} holds a synthetic dataset made with other options ({marker}); "
                             f"choose a new --root or delete {out}")
        atomic_write_json(marker, wanted)  # every task writes the same bytes
        make_dataset(out, s["clips"], s["seed"], s["classes"], _spec(s), only=())
        (out / "AVE").mkdir(exist_ok=True)  # the builder reads the release (and its video folder) before any video

        def write_videos(records: list[Any]) -> None:
            need = {c.id for c in records if not (out / "AVE" / f"{c.id}.mp4").is_file()}
            if need:
                make_dataset(out, s["clips"], s["seed"], s["classes"], _spec(s), only=need)

        return write_videos

    def source(self, out: Path) -> dict[str, Any]:
        return {"root": Path(out)}

    def describe(self, summary: dict[str, Any], out: str) -> str:
        return (f"synthetic AVE-layout dataset in {out}: " + ", ".join(f"{k} {v}" for k, v in summary.items())
                + f"; next: avpea shards build ave --root {out} --out SHARDS_DIR")


def _settings(clips: int = 480, classes: int = 8, seed: int = 0, size: int = 128, fps: int = 4,
              sample_rate: int = 16000, channels: int = 1) -> dict[str, Any]:
    return {"clips": clips, "classes": classes, "seed": seed, "size": size, "fps": fps, "sample_rate": sample_rate,
            "channels": channels}


def _spec(s: dict[str, Any]) -> SynthSpec:
    return SynthSpec(size=s["size"], fps=s["fps"], sample_rate=s["sample_rate"], channels=s["channels"])


SYNTH = AveSynth()
