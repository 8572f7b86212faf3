"""`avpea shards synth valor`: an embedded retrieval/captioning set in the VALOR-32K release layout, from a seed.

Each 10 s clip shows one pattern (a colour, a shape, on the left or the right half of the frame) and plays one
sound (a pitch and a kind: chord, whistle or beeping) from start to end; its caption names both, from a small
grammar ("A blue checkerboard on the left while a high chord plays."). Clips come in quads: two pictures x two
sounds, so every clip shares its picture with one clip and its sound with another clip of the same split:
a model that sees only the picture (or hears only the sound) cannot tell a quad's clips apart, R@1 needs both
streams and a caption must name both to match. A (picture, sound) pair occurs at most once per split.

Writes ``OUT/desc_{train,val,test}.json`` (lists of ``{"video_id", "desc"}``, VALOR's keys; ids are
11-character YouTube-like ids with ``-`` and ``_``, then ``_<start>.000_<end>.000`` as VALOR's), ``OUT/videos/<video_id>.mp4``
(H.264 + AAC), ``OUT/clips.json`` (each clip's picture, sound, split and captions: the ground truth) and
``OUT/synth.json`` (arguments and counts; a folder holding it with the same arguments is reused). Like a real
set, some clips have two captions (two records), and train holds one exact duplicate record and one record
with an empty caption (the builder writes the first once and skips the others with their reasons).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...data.builder import SynthSource
from ...data.synthmedia import (COLOURS as RGB, ID_CHARS, MARKER, SynthSpec, add_media_arguments, background, finished_set,
                                  media_options, paint, write_mp4)
from ...fileio import atomic_write_json

SPLITS = ("train", "val", "test")
SECONDS = 10
COLOURS = ("red", "green", "blue", "yellow", "white", "orange")
SHAPES = {"checkerboard": "checker", "square": "square", "circle": "circle"}  # caption word -> pattern
SIDES = ("left", "right")
PITCHES = {"low": 250.0, "medium": 900.0, "high": 3000.0}  # Hz, far apart on the mel scale
SOUNDS = ("chord", "whistle", "beeping")
TEMPLATES = (  # sentences as VALOR's: a capital letter, a full stop (caption metrics drop both)
    "A {colour} {shape} on the {side} while a {pitch} {sound} plays.",
    "A {pitch} {sound} plays while a {colour} {shape} is shown on the {side}.",
    "On the {side}, a {colour} {shape} appears as a {pitch} {sound} plays.",
)
EXTRA_CAPTION_SHARE = 0.1  # of clips with a second caption (another template)


@dataclass(frozen=True)
class Clip:
    video_id: str
    split: str
    colour: str
    shape: str
    side: str
    pitch: str
    sound: str
    captions: tuple[str, ...]

    @property
    def picture(self) -> tuple[str, str, str]:
        return self.colour, self.shape, self.side

    @property
    def audio(self) -> tuple[str, str]:
        return self.pitch, self.sound


def caption(template: int, picture: tuple[str, str, str], audio: tuple[str, str]) -> str:
    colour, shape, side = picture
    pitch, sound = audio
    return TEMPLATES[template].format(colour=colour, shape=shape, side=side, pitch=pitch, sound=sound)


def _clip_id(rng: np.random.Generator) -> str:
    vid = "".join(ID_CHARS[i] for i in rng.integers(len(ID_CHARS), size=11))
    start = 10 * int(rng.integers(0, 30))
    return f"{vid}_{start}.000_{start + SECONDS}.000"  # VALOR's form, dots included


def _quad_splits(quads: int) -> list[str]:
    n_test, n_val = max(1, round(0.25 * quads)), max(1, round(0.125 * quads))
    return ["train"] * (quads - n_test - n_val) + ["val"] * n_val + ["test"] * n_test


def make_clips(clips: int, seed: int) -> list[Clip]:
    """Quads of (2 pictures x 2 sounds), each quad in one split; a pair is never repeated within a split."""
    import numpy as np  # here, not at the top: `avpea --help` imports this module for its options
    if clips < 12 or clips % 4:
        raise ValueError(f"--clips={clips} must be a multiple of 4 and >= 12 (quads of clips, one per split at least)")
    rng = np.random.default_rng([seed, 10])
    pictures = [(c, s, d) for c in COLOURS for s in SHAPES for d in SIDES]
    sounds = [(p, k) for p in PITCHES for k in SOUNDS]
    used: dict[str, set] = {s: set() for s in SPLITS}
    ids: set[str] = set()
    out = []
    for split in _quad_splits(clips // 4):
        for _ in range(10_000):
            p = [pictures[int(i)] for i in rng.choice(len(pictures), 2, replace=False)]
            a = [sounds[int(i)] for i in rng.choice(len(sounds), 2, replace=False)]
            pairs = [(pi, ai) for pi in p for ai in a]
            if not any(x in used[split] for x in pairs):
                break
        else:
            raise ValueError(f"--clips={clips} is too many: the {split} split ran out of distinct "
                             f"(picture, sound) pairs ({len(pictures)} x {len(sounds)}); use at most ~600 clips")
        used[split].update(pairs)
        for pi, ai in pairs:
            vid = _clip_id(rng)
            while vid in ids:
                vid = _clip_id(rng)
            ids.add(vid)
            first = int(rng.integers(len(TEMPLATES)))
            caps = [caption(first, pi, ai)]
            if rng.random() < EXTRA_CAPTION_SHARE:
                caps.append(caption((first + 1 + int(rng.integers(len(TEMPLATES) - 1))) % len(TEMPLATES), pi, ai))
            out.append(Clip(vid, split, *pi, *ai, tuple(caps)))
    return out


def records(clips: list[Clip], seed: int) -> dict[str, list[dict[str, str]]]:
    """{split: VALOR records}; train also gets one exact duplicate and one empty caption (see the docstring)."""
    import numpy as np
    out: dict[str, list[dict[str, str]]] = {s: [] for s in SPLITS}
    for c in clips:
        out[c.split] += [{"video_id": c.video_id, "desc": d} for d in c.captions]
    train = out["train"]
    rng = np.random.default_rng([seed, 11])
    dup, empty = (int(i) for i in rng.choice(len(train), 2, replace=False))
    dup_record, empty_id = dict(train[dup]), train[empty]["video_id"]
    train.insert(dup + 1, dup_record)
    train.insert(int(rng.integers(len(train) + 1)), {"video_id": empty_id, "desc": ""})
    return out


def render(clip: Clip, spec: SynthSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(frames (T, S, S, 3) uint8, mono audio float32): the picture and the sound fill the whole clip."""
    import numpy as np
    size, sr = spec.size, spec.sample_rate
    base = background(size, rng).copy()
    top, bottom = int(size * rng.uniform(0.1, 0.2)), int(size * rng.uniform(0.8, 0.9))
    left = int(size * rng.uniform(0.03, 0.08)) + (size // 2 if clip.side == "right" else 0)
    right = left + int(size * 0.42)
    shade = np.array(RGB[clip.colour], np.float32) * rng.uniform(0.85, 1.0)
    paint(base, (top, bottom, left, right), tuple(shade), SHAPES[clip.shape])
    frames = np.stack([np.clip(base + rng.normal(0, 4, (size, size, 1)), 0, 255).astype(np.uint8)
                       for _ in range(SECONDS * spec.fps)])
    t = np.arange(SECONDS * sr) / sr
    f = PITCHES[clip.pitch]
    ratios = {"chord": (1.0, 1.25, 1.5), "whistle": (1.0,), "beeping": (1.0,)}[clip.sound]
    wave = sum(np.sin(2 * np.pi * f * r * t + rng.uniform(0, 2 * np.pi)) for r in ratios) / len(ratios)
    if clip.sound == "beeping":
        wave = wave * ((t * 4) % 1 < 0.5)  # 4 beeps a second: visible in 10 ms fbank frames
    audio = rng.uniform(0.25, 0.4) * wave + rng.normal(0, 0.001, len(t))
    return frames, np.clip(audio, -1, 1).astype(np.float32)


def make_valor(out: str | Path, clips: int = 240, seed: int = 0, spec: SynthSpec = SynthSpec(size=96, aac_fast=True),
               progress: bool = False) -> dict[str, Any]:
    """Write the set (see the module docstring) -> the summary also kept in ``OUT/synth.json``.
    A folder already holding a finished set with the same arguments is reused."""
    import numpy as np
    if spec.seconds != SECONDS:
        raise ValueError(f"clips are {SECONDS} s long; got seconds={spec.seconds}")
    out = Path(out)
    wanted = {"dataset": "valor", "clips": clips, "seed": seed, "size": spec.size, "fps": spec.fps,
              "sample_rate": spec.sample_rate}
    done = finished_set(out, wanted)
    if done is not None:
        return {**done, "reused": True}
    all_clips = make_clips(clips, seed)
    (out / MARKER).unlink(missing_ok=True)  # a crash below must not leave an older set looking finished
    t = time.perf_counter()
    from tqdm import tqdm

    for n, clip in enumerate(tqdm(all_clips, desc="synth valor", unit="clip", disable=not progress)):
        frames, audio = render(clip, spec, np.random.default_rng([seed, 12, n]))
        write_mp4(out / "videos" / f"{clip.video_id}.mp4", frames, audio, spec)
    recs = records(all_clips, seed)
    for split, rs in recs.items():
        atomic_write_json(out / f"desc_{split}.json", rs)
    atomic_write_json(out / "clips.json", [asdict(c) for c in all_clips])
    summary = {**wanted, "clips_per_split": {s: sum(c.split == s for c in all_clips) for s in SPLITS},
               "records_per_split": {s: len(r) for s, r in recs.items()},
               "seconds": round(time.perf_counter() - t, 1)}
    atomic_write_json(out / MARKER, summary)  # last: its presence means the folder is complete
    return {**summary, "reused": False}


class ValorSynth(SynthSource):
    """``avpea shards synth valor``: the embedded set of the retrieval and captioning demos."""

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--clips", type=int, default=240, help="number of clips (default 240)")
        add_media_arguments(parser, size=96)

    def options(self, args: Any) -> dict[str, Any]:
        return {"clips": args.clips, **media_options(args)}

    def make(self, out: Path, progress: bool = False, *, clips: int = 240, seed: int = 0, size: int = 96,
             fps: int = 4, sample_rate: int = 16000, channels: int = 1, aac_fast: bool = True) -> dict[str, Any]:
        # aac_fast=False: the retrieval and captioning demos' sets were made with the full AAC encoder
        spec = SynthSpec(size=size, fps=fps, sample_rate=sample_rate, channels=channels, aac_fast=aac_fast)
        return make_valor(out, clips=clips, seed=seed, spec=spec, progress=progress)

    def source(self, out: Path) -> dict[str, Any]:
        return {"ann_dir": Path(out), "videos": Path(out) / "videos"}

    def describe(self, summary: dict[str, Any], out: str) -> str:
        what = "reused the finished" if summary["reused"] else f"wrote in {summary['seconds']:.0f} s a"
        counts = ", ".join(f"{k} {v}" for k, v in summary["clips_per_split"].items())
        return (f"{what} VALOR-layout set in {out}: clips {counts}"
                f"; next: avpea shards build valor --ann-dir {out} --videos {out}/videos --out SHARDS")


SYNTH = ValorSynth()
