"""`avpea predict`: a trained model on new videos -> a per-second event timeline (JSON + PNG) per video.

Each video goes through the very functions that built the training shards (PyAV decode at the shards'
frame size, JPEG at their quality, Kaldi fbank per one-second segment) and the loader's frame decoding,
over every second of the video; the seconds are cut into windows (default: the model's 10 segments), the
windows batched through the model. Files per video in ``--out``: ``<stem>.json`` (``{"video", "seconds":
[{"t", "label", "prob", "top3"}]}``, one entry per second) and ``<stem>.png`` (the timeline). A video that
cannot be read costs one line; the others still run.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preprocessing:
    """How the training shards were made (read from their manifest when it is reachable)."""

    frame_size: int
    jpeg_quality: int = 90
    sample_rate: int = 16000


@dataclass
class Predictor:
    """A loaded model with its class names and preprocessing; ``timeline(video)`` does the work."""

    model: Any
    cfg: Any
    classes: list[str]
    prep: Preprocessing
    device: Any
    window_s: int
    batch_size: int

    def timeline(self, video: str | Path) -> dict[str, Any]:
        """-> ``{"video", "seconds": [{"t", "label", "prob", "top3": [{"label", "prob"}]}]}``."""
        frames, audio = video_inputs(video, self.prep, self.cfg.model.img_size)
        probs = self.probabilities(frames, audio)
        seconds = []
        for t, p in enumerate(probs.tolist()):
            order = sorted(range(len(p)), key=lambda k: -p[k])[:3]
            top3 = [{"label": self.classes[k], "prob": round(p[k], 6)} for k in order]
            seconds.append({"t": t, "label": top3[0]["label"], "prob": top3[0]["prob"], "top3": top3})
        return {"video": str(video), "seconds": seconds}

    def probabilities(self, frames: Any, audio: Any) -> Any:
        """frames uint8 (N, 3, S, S), audio float (N, mel, frames) for N seconds -> softmax (N, classes)."""
        import torch

        n, w = frames.shape[0], self.window_s
        windows = [(s, min(n, s + w)) for s in range(0, n, w)]  # the last one may be shorter
        out = torch.empty(n, self.cfg.avel.num_classes)
        for length in sorted({b - a for a, b in windows}):  # equal lengths stack into one batch
            same = [(a, b) for a, b in windows if b - a == length]
            for i in range(0, len(same), self.batch_size):
                chunk = same[i:i + self.batch_size]
                f = torch.stack([frames[a:b] for a, b in chunk]).to(self.device)
                x = torch.stack([audio[a:b] for a, b in chunk]).to(self.device)
                with torch.inference_mode():
                    p = self.model(f, x).float().softmax(-1).cpu()
                for (a, b), row in zip(chunk, p):
                    out[a:b] = row
        return out


def video_inputs(video: str | Path, prep: Preprocessing, img_size: int) -> tuple[Any, Any]:
    """A whole video -> (frames uint8 (N, 3, S, S), normalised fbank float32 (N, mel, frames)), N = its
    seconds, through the shard build's and the loader's own functions. Raises DecodeError for bad input."""
    import numpy as np
    import torch

    from ...data.decode import DecodeError, decode_clip
    from ...data.features import fbank_segments, jpeg_bytes, normalise_fbank
    from ...data.stream import decode_jpeg

    n = video_seconds(video)
    frames, wave = decode_clip(video, segments=n, size=prep.frame_size, sample_rate=prep.sample_rate,
                               no_audio="skip", min_seconds=0.0)
    if not len(frames):
        raise DecodeError("no decodable video frames")
    pics = np.stack([decode_jpeg(jpeg_bytes(f, prep.jpeg_quality), prep.frame_size, img_size) for f in frames])
    fbank = normalise_fbank(fbank_segments(wave, n, prep.sample_rate))
    return torch.from_numpy(pics).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(fbank)


def video_seconds(video: str | Path) -> int:
    """Whole seconds the video covers (a last partial second counts from half a second on)."""
    import av

    from ...data.decode import DecodeError

    path = Path(video)
    if not path.is_file():
        raise DecodeError("missing file")
    try:
        with av.open(str(path), metadata_errors="ignore") as c:
            if not c.streams.video:
                raise DecodeError("no video stream")
            if not c.streams.audio:
                raise DecodeError("no audio stream (the model needs the sound track)")
            s = c.streams.video[0]
            duration = float(s.duration * s.time_base) if s.duration and s.time_base else None
            if duration is None and c.duration:
                duration = c.duration / 1_000_000  # microseconds (av.time_base)
    except DecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise DecodeError(f"not a readable video: {type(e).__name__}: {e}") from None
    if not duration or duration <= 0:
        raise DecodeError("the container states no duration")
    return max(1, math.floor(duration + 0.5))


# ---------------------------------------------------------------------------------------------
# Loading


def resolve_model(run: str | Path | None, checkpoint: str | Path | None, config: str | Path | None
                  ) -> tuple[Path, Path]:
    """(--run RUN) or (--checkpoint FILE --config FILE) -> (config file, adapter export)."""
    if run is not None:
        run = Path(run)
        if not (run / "config.yaml").is_file():
            raise FileNotFoundError(f"'{run}' is not a run folder (no config.yaml); pass the train.out of a run")
        for name in ("best", "final"):
            if (run / name / "adapters.safetensors").is_file():
                return run / "config.yaml", run / name / "adapters.safetensors"
        raise FileNotFoundError(f"'{run}' holds no exported model (best/ or final/adapters.safetensors): the run "
                                f"has not validated yet; train it further or pass --checkpoint")
    if checkpoint is None or config is None:
        raise ValueError("pass --run RUN, or both --checkpoint FILE and --config FILE")
    return Path(config), Path(checkpoint)


def shard_facts(shards: str, num_classes: int, img_size: int) -> tuple[list[str], Preprocessing]:
    """Class names and preprocessing from the training shards' manifest; neutral names when unreachable."""
    from ...data.manifest import read_manifest

    try:
        m = read_manifest(shards)
        classes, p = list(m["classes"]), m.get("preprocessing", {})
        prep = Preprocessing(int(p.get("frame_size", img_size)), int(p.get("jpeg_quality", 90)),
                             int(p.get("sample_rate", 16000)))
        if len(classes) == num_classes:
            return classes, prep
        log.warning("the shards in %s list %d classes, the model has %d: naming classes by number", shards,
                    len(classes), num_classes)
        return [f"class {k}" for k in range(num_classes)], prep
    except (OSError, ValueError, KeyError) as e:
        log.warning("class names unavailable (%s); naming classes by number, frames at %d px",
                    str(e).split(";")[0], img_size)
        return [f"class {k}" for k in range(num_classes)], Preprocessing(img_size)


def load_predictor(config: Path, checkpoint: Path, *, device: str = "auto", window_s: int = 0,
                   batch_size: int = 8, overrides: list[str] | tuple[str, ...] = ()) -> Predictor:
    import torch

    from ...config_load import load_config
    from ...models.model import build_model
    from ..registry import build_task
    from ...train.export import load_trainable

    cfg = load_config(config, list(overrides))
    if cfg.task != "avel":
        raise ValueError(f"avpea predict draws event timelines of AVEL runs; '{config}' trained task={cfg.task}: "
                         f"use `avpea search` (retrieval) or `avpea caption` (captioning) for VALOR runs")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is usable here; use --device cpu")
    torch.manual_seed(cfg.train.seed)  # a random-init frozen backbone is rebuilt exactly as training built it
    task = build_task(cfg, None)
    model = build_model(cfg.model, task=task)
    load_trainable(model, checkpoint, cfg.model, task.signature())
    model.to(device).eval()
    classes, prep = shard_facts(cfg.data.shards, cfg.avel.num_classes, cfg.model.img_size)
    window = window_s or cfg.model.num_segments
    if window < 1 or batch_size < 1:
        raise ValueError(f"--window {window} and --batch-size {batch_size} must be >= 1")
    return Predictor(model, cfg, classes, prep, torch.device(device), window, batch_size)


# ---------------------------------------------------------------------------------------------
# Output


def events(timeline: dict[str, Any], background: str = "background") -> list[tuple[str, int, int, float]]:
    """Runs of one non-background label: (label, first second, end second, mean prob)."""
    runs: list[tuple[str, int, int, float]] = []
    for s in timeline["seconds"]:
        if runs and runs[-1][0] == s["label"] and runs[-1][2] == s["t"]:
            label, a, _, total = runs[-1]
            runs[-1] = (label, a, s["t"] + 1, total + s["prob"])
        else:
            runs.append((s["label"], s["t"], s["t"] + 1, s["prob"]))
    return [(label, a, b, total / (b - a)) for label, a, b, total in runs if label != background]


def summary_line(timeline: dict[str, Any], json_path: Path) -> str:
    found = events(timeline)
    text = ", ".join(f"{label} {a}-{b} s ({p:.2f})" for label, a, b, p in found) or "no event"
    return f"{timeline['video']}: {len(timeline['seconds'])} s; {text} -> {json_path.with_suffix('.*')}"


def timeline_png(timeline: dict[str, Any], classes: list[str]) -> bytes:
    """The timeline as coloured bars over the seconds (one colour per class, background grey), each event
    named over its run where the name fits and in the legend, and the winning probability below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    seconds = timeline["seconds"]
    n = len(seconds)
    cmap = plt.get_cmap("tab10" if len(classes) <= 11 else "tab20")
    events_only = [c for c in classes if c != "background"]
    colour = {c: cmap(k % cmap.N) for k, c in enumerate(events_only)}
    colour["background"] = "#d0d0d0"
    width = max(6.0, min(24.0, 0.3 * n + 2))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width, 3.0), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    top.broken_barh([(s["t"], 1) for s in seconds], (0, 1), facecolors=[colour.get(s["label"], "k") for s in seconds],
                    edgecolor="white", linewidth=0.5)
    chars_per_second = (width - 1.5) / n * 100 / 6  # ~6 px per character at fontsize 8 and 100 dpi
    for label, a, b, p in events(timeline):
        short = label.split(" (")[0]
        if len(short) <= chars_per_second * (b - a):
            top.text((a + b) / 2, 0.5, short, ha="center", va="center", fontsize=8, clip_on=True)
    present = [c for c in events_only if any(s["label"] == c for s in seconds)]
    if present:
        top.legend(handles=[Patch(color=colour[c], label=c) for c in present], loc="lower left",
                   bbox_to_anchor=(0, 1.02), ncol=min(4, len(present)), fontsize=7, frameon=False)
    top.set_yticks([])
    top.set_title(Path(timeline["video"]).name, fontsize=9, loc="right")
    bottom.step([s["t"] for s in seconds] + [n], [s["prob"] for s in seconds] + [seconds[-1]["prob"]],
                where="post", color="k", linewidth=1)
    bottom.set_ylim(0, 1.05)
    bottom.set_ylabel("prob", fontsize=8)
    bottom.set_xlim(0, n)
    bottom.set_xlabel("second")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def predict_videos(predictor: Predictor, videos: list[str], out: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every video in turn; -> (timelines written, one problem line per video that failed)."""
    from ...data.decode import DecodeError
    from ...fileio import atomic_write_bytes, atomic_write_json

    done, problems, stems = [], [], set()
    for video in videos:
        try:
            timeline = predictor.timeline(video)
        except (DecodeError, ValueError, OSError) as e:
            problems.append(f"{video}: skipped: {e}")
            print(f"avpea predict: {problems[-1]}", file=sys.stderr, flush=True)
            continue
        stem, k = Path(video).stem, 1
        while stem in stems:  # two videos of one name from different folders keep both results
            k += 1
            stem = f"{Path(video).stem}-{k}"
        stems.add(stem)
        json_path = out / f"{stem}.json"
        atomic_write_json(json_path, timeline)
        atomic_write_bytes(out / f"{stem}.png", timeline_png(timeline, predictor.classes))
        print(summary_line(timeline, json_path), flush=True)
        done.append(timeline)
    return done, problems


# ---------------------------------------------------------------------------------------------
# Command


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="a trained model on new videos: per-second event timeline (JSON + PNG)",
                       description="Decode each video with the shards' preprocessing, run the model over "
                                   "every second in windows, and write VIDEO_STEM.json and VIDEO_STEM.png to "
                                   "--out. Exit 0: every video done; 1: some could not be read (one line each).")
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (any container FFmpeg reads)")
    p.add_argument("--run", help="a training run folder (train.out): its config.yaml and best/ (else final/) export")
    p.add_argument("--checkpoint", help="an adapter export (.safetensors), with --config")
    p.add_argument("--config", help="the config the export was trained with, with --checkpoint")
    p.add_argument("--out", help="output folder (default: RUN/predictions)")
    p.add_argument("--window", type=int, default=0, help="seconds per model window (default: model.num_segments)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(func=predict_cmd)


def predict_cmd(args: argparse.Namespace) -> int:
    if args.run and (args.checkpoint or args.config):
        raise ValueError("pass either --run RUN or --checkpoint FILE --config FILE, not both")
    config, checkpoint = resolve_model(args.run, args.checkpoint, args.config)
    if args.out is None and args.run is None:
        raise ValueError("--out DIR is needed with --checkpoint (the default is RUN/predictions with --run)")
    out = Path(args.out) if args.out else Path(args.run) / "predictions"
    predictor = load_predictor(config, checkpoint, device=args.device, window_s=args.window,
                               batch_size=args.batch_size)
    done, problems = predict_videos(predictor, args.videos, out)
    if problems:
        print(f"avpea predict: {len(done)} of {len(args.videos)} videos done; {len(problems)} skipped "
              f"(lines above)", file=sys.stderr)
    return 1 if problems else 0
