"""`avpea shards synth audioset --out DIR`: a small multi-label set in AudioSet's release layout.

Each clip shows one or two picture kinds (a pattern in a random colour; two side by side) and plays one or
two sound kinds (tones). A class is a (picture kind, sound kind) pair and a clip carries every pair of what
it shows and plays, so neither stream alone decides a label: the picture says which row of the 3 x 3 label
grid is on, the sound which column. Written as AudioSet has it: class_labels_indices.csv (display names with
commas, quoted), balanced_train / unbalanced_train / eval _segments.csv (comment lines, ', ' separators,
quoted label lists) and one file per segment, ``videos/Y{id}.mp4`` (the builder's default pattern). The
release's quirks are in it on purpose: ids starting with '-' or holding '_', a repeated segment, a label
outside the index, and every tenth video missing (gone from YouTube), so a build of it shows each one handled.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ...data.builder import SynthSource
from ...data.synthmedia import (COLOURS, ID_CHARS, MARKER, SynthSpec, add_media_arguments, background,
                                media_options, paint, tone, write_mp4)
from ...fileio import atomic_write_json, atomic_write_text

PICTURES = ("bars", "circle", "checker")
SOUNDS = ("low hum", "mid beep", "high whistle")
LABELS_FILE = "class_labels_indices.csv"
FILES = {"balanced_train": "balanced_train_segments.csv", "unbalanced_train": "unbalanced_train_segments.csv",
         "eval": "eval_segments.csv"}
VIDEOS = "videos"
UNKNOWN_LABEL = "/m/0notaclass"


def classes() -> list[tuple[str, str]]:
    """(mid, display name) in index order: picture kind p, sound kind s -> index 3 p + s."""
    return [(f"/t/synth{3 * p + s:02d}", f"{pic.capitalize()}, {snd}")
            for p, pic in enumerate(PICTURES) for s, snd in enumerate(SOUNDS)]


def _clip(n: int, seed: int) -> dict[str, Any]:
    import numpy as np  # here, not at the top: `avpea --help` imports this module for its options
    rng = np.random.default_rng([seed, n])
    chars = rng.choice(list(ID_CHARS), 11)
    if n == 0:
        chars[0] = "-"  # ids starting with '-' break spreadsheets and command lines
    if n == 1:
        chars[5] = "_"
    pictures = sorted(rng.choice(len(PICTURES), int(rng.integers(1, 3)), replace=False).tolist())
    sounds = sorted(rng.choice(len(SOUNDS), int(rng.integers(1, 3)), replace=False).tolist())
    return {"id": "".join(chars), "start": int(rng.choice([0, 10, 30, 120])), "pictures": pictures,
            "sounds": sounds, "colour": int(rng.integers(len(COLOURS))), "missing": n % 10 == 9}


def labels_of(clip: dict[str, Any]) -> list[str]:
    mids = [m for m, _ in classes()]
    return [mids[3 * p + s] for p in clip["pictures"] for s in clip["sounds"]]


def _render(clip: dict[str, Any], n: int, seed: int, spec: SynthSpec) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np
    rng = np.random.default_rng([seed, n, 1])
    size, frames_n = spec.size, int(round(spec.seconds * spec.fps))
    colour = list(COLOURS.values())[clip["colour"]]
    frames = np.empty((frames_n, size, size, 3), np.uint8)
    for j in range(frames_n):
        img = background(size, rng)
        half = size // 2
        boxes = [(0, size, 0, size)] if len(clip["pictures"]) == 1 else [(0, size, 0, half), (0, size, half, size)]
        for box, p in zip(boxes, clip["pictures"]):
            paint(img, box, colour, PICTURES[p])
        frames[j] = np.clip(img, 0, 255).astype(np.uint8)
    t = np.arange(int(round(spec.seconds * spec.sample_rate))) / spec.sample_rate
    audio = sum(np.sin(2 * np.pi * tone(2 * s, 2 * len(SOUNDS) - 1) * t) for s in clip["sounds"])
    audio = 0.3 * audio / len(clip["sounds"]) + rng.normal(0, 0.01, len(t))
    return frames, audio.astype(np.float32)


def _csv_rows(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _segments_text(clips: list[dict[str, Any]], extra: list[str], seconds: float) -> str:
    lines = ["# Segments csv created by avpea shards synth audioset",
             f"# num_ytids={len(clips)}, num_segs={len(clips) + len(extra)}, num_unique_labels={len(classes())}",
             "# YTID, start_seconds, end_seconds, positive_labels"]
    lines += [f'{c["id"]}, {c["start"]:.3f}, {c["start"] + seconds:.3f}, "{",".join(labels_of(c))}"' for c in clips]
    return "\n".join(lines + extra) + "\n"


def make_dataset(out: Path, clips: int, seed: int, spec: SynthSpec, progress: bool = False,
                 reuse: bool = False) -> dict[str, int]:
    """Write the annotation files and the videos (the present ones; with ``reuse``, only those not on disk yet);
    -> rows per file."""
    if clips < 10:
        raise ValueError(f"--clips={clips} must be >= 10")
    out = Path(out)
    all_clips = [_clip(n, seed) for n in range(clips)]
    n_eval = max(2, round(0.15 * clips))
    train, test = all_clips[:clips - n_eval], all_clips[clips - n_eval:]
    balanced, unbalanced = train[:len(train) // 2], train[len(train) // 2:]
    first = balanced[0]
    quirks = [f'{first["id"]}, {first["start"]:.3f}, {first["start"] + spec.seconds:.3f}, "{labels_of(first)[0]}"',
              f'{unbalanced[0]["id"][:10]}Q, 0.000, {spec.seconds:.3f}, "{classes()[0][0]},{UNKNOWN_LABEL}"']
    atomic_write_text(out / LABELS_FILE, "index,mid,display_name\n" + _csv_rows(
        [[str(i), m, name] for i, (m, name) in enumerate(classes())]))
    atomic_write_text(out / FILES["balanced_train"], _segments_text(balanced, [], spec.seconds))
    atomic_write_text(out / FILES["unbalanced_train"], _segments_text(unbalanced, quirks, spec.seconds))
    atomic_write_text(out / FILES["eval"], _segments_text(test, [], spec.seconds))
    from tqdm import tqdm

    (out / VIDEOS).mkdir(parents=True, exist_ok=True)
    for n in tqdm(range(clips), desc="synth audioset", unit="clip", disable=not progress):
        clip = all_clips[n]
        path = out / VIDEOS / f"Y{clip['id']}.mp4"
        if not clip["missing"] and not (reuse and path.is_file()):
            write_mp4(path, *_render(clip, n, seed, spec), spec)
    return {"balanced_train": len(balanced), "unbalanced_train": len(unbalanced) + len(quirks), "eval": len(test),
            "videos": sum(not c["missing"] for c in all_clips)}


class AudioSetSynth(SynthSource):
    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--clips", type=int, default=400, help="number of clips (default 400)")
        parser.add_argument("--seconds", type=float, default=10.0, help="length of each segment (default 10)")
        add_media_arguments(parser, size=64)

    def options(self, args: Any) -> dict[str, Any]:
        return {"clips": args.clips, "seconds": args.seconds, **media_options(args)}

    def make(self, out: Path, progress: bool = False, **options: Any) -> dict[str, Any]:
        """Write the set; a folder holding the same set (its ``synth.json``) gets only its missing videos."""
        out, s = Path(out), _settings(**options)
        wanted = {"dataset": "audioset", **s}
        marker = out / MARKER
        reuse = marker.is_file() and json.loads(marker.read_text()) == wanted
        marker.unlink(missing_ok=True)  # until every file of the set is written
        spec = SynthSpec(size=s["size"], fps=s["fps"], sample_rate=s["sample_rate"], channels=s["channels"],
                         seconds=s["seconds"])
        counts = make_dataset(out, s["clips"], s["seed"], spec, progress=progress, reuse=reuse)
        atomic_write_json(marker, wanted)
        return counts

    def source(self, out: Path) -> dict[str, Any]:
        out = Path(out)
        return {"segments": [out / f for f in FILES.values()], "labels": out / LABELS_FILE, "videos": out / VIDEOS}

    def describe(self, summary: dict[str, Any], out: str) -> str:
        files = " ".join(f"{out}/{f}" for f in FILES.values())
        return (f"synthetic AudioSet-layout dataset in {out}: " + ", ".join(f"{k} {v}" for k, v in summary.items())
                + f"; next: avpea shards build audioset --segments {files} --labels {out}/{LABELS_FILE} "
                  f"--videos {out}/{VIDEOS} --out SHARDS_DIR")


def _settings(clips: int = 400, seconds: float = 10.0, seed: int = 0, size: int = 64, fps: int = 4,
              sample_rate: int = 16000, channels: int = 1) -> dict[str, Any]:
    return {"clips": clips, "seconds": seconds, "seed": seed, "size": size, "fps": fps, "sample_rate": sample_rate,
            "channels": channels}


SYNTH = AudioSetSynth()
