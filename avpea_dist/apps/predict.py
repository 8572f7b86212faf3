"""`avpea predict`: a trained model on new videos -> a per-second event timeline (JSON + PNG) per video.

Each video goes through the very functions that built the training shards (PyAV decode at the shards'
frame size, turned upright as its display matrix says, JPEG at their quality, Kaldi fbank per one-second
segment) and the loader's frame decoding, over every second of the video; the seconds are cut into windows
(default: the model's 10 segments), the windows batched through the model. A long video is decoded a
batch of windows at a time (``data.decode_windows``: bounded memory, the same result as decoding it
whole), with a progress bar on a terminal and a line every ``PROGRESS_EVERY_S`` otherwise. Class names and
preprocessing come from the run folder's copy of the training shards' manifest (or, with ``--model DIR``, from
a model folder's config.json: `avpea export`), so a run folder or a model folder works from anywhere, the
shards gone. Files per video in ``--out``: ``<stem>.json`` (``{"video", "seconds": [{"t",
"label", "prob", "top3"}]}``, one entry per second) and ``<stem>.png`` (the timeline). A video that cannot
be read costs one line; the others still run.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..train.runfolder import read_run_manifest

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 30.0
"""Off a terminal (a log file, a batch job), a video still decoding prints its progress this often."""


@dataclass(frozen=True)
class Preprocessing:
    """How the training shards were made (read from the run folder's copy of their manifest)."""

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
        """-> ``{"video", "seconds": [{"t", "label", "prob", "top3": [{"label", "prob"}]}]}``. The video is
        decoded ``window_s * batch_size`` seconds at a time (one batch of windows), so its length costs time
        but not memory; the windows and batches are those of the whole video, so the result is too."""
        import torch

        n = video_seconds(find_video(video))
        probs = []
        with Progress(str(video), n) as progress:
            for frames, audio in video_windows(video, n, self.prep, self.cfg.model.img_size,
                                               self.window_s * self.batch_size):
                probs.append(self.probabilities(frames, audio))
                progress.advance(len(frames))
        seconds = []
        for t, p in enumerate(torch.cat(probs).tolist()):
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


def video_windows(video: str | Path, seconds: int, prep: Preprocessing, img_size: int, window: int
                  ) -> Iterator[tuple[Any, Any]]:
    """Seconds [0, ``seconds``) of a video, ``window`` at a time -> (frames uint8 (w, 3, S, S), normalised
    fbank float32 (w, mel, frames)), through the shard build's and the loader's own functions. Raises
    ``DecodeError`` for bad input (also midway: nothing is returned for a video that fails)."""
    import numpy as np
    import torch

    from ..data.decode_windows import decode_windows
    from ..data.features import fbank_segments, jpeg_bytes, normalise_fbank
    from ..data.stream import decode_jpeg

    for frames, wave in decode_windows(video, seconds, window=window, size=prep.frame_size,
                                       sample_rate=prep.sample_rate):
        pics = np.stack([decode_jpeg(jpeg_bytes(f, prep.jpeg_quality), prep.frame_size, img_size) for f in frames])
        fbank = normalise_fbank(fbank_segments(wave, len(frames), prep.sample_rate))
        yield torch.from_numpy(pics).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(fbank)


def video_inputs(video: str | Path, prep: Preprocessing, img_size: int) -> tuple[Any, Any]:
    """A whole video at once (``video_windows`` joined): frames (N, 3, S, S), fbank (N, mel, frames)."""
    import torch

    parts = list(video_windows(video, video_seconds(find_video(video)), prep, img_size, 60))
    return torch.cat([f for f, _ in parts]), torch.cat([a for _, a in parts])


def find_video(video: str | Path) -> Path:
    """The file a VIDEO argument names; ``DecodeError`` (the reason) when there is none. A path without its
    file is looked up by the shard builders' rule (``data.videos``): ``clip.mp4`` finds a ``clip.webm``
    that a downloader left instead."""
    from ..data.decode import DecodeError
    from ..data.videos import find_video as find_by_id

    path = Path(video)
    if path.is_dir():
        raise DecodeError("a folder, not a video file (pass the video files, e.g. FOLDER/*.mp4)")
    if not path.is_file() and path.parent.is_dir():
        path = find_by_id(path.parent, path.stem if path.suffix else path.name)
    if not path.is_file():
        raise DecodeError("not a file (a folder named like a video)" if path.exists() else "missing file")
    return path


class Progress:
    """A long video's decoding progress on stderr: a tqdm bar on a terminal; elsewhere one line every
    ``PROGRESS_EVERY_S`` (a video done sooner prints none)."""

    def __init__(self, name: str, seconds: int) -> None:
        self.name, self.seconds, self.done = name, seconds, 0
        self.start = self.last = time.monotonic()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=seconds, desc=Path(name).name, unit="s", leave=False, file=sys.stderr,
                            dynamic_ncols=True)

    def advance(self, seconds: int) -> None:
        self.done += seconds
        if self.bar is not None:
            self.bar.update(seconds)
            return
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S and self.done < self.seconds:
            self.last = now
            print(f"avpea predict: {self.name}: {self.done} of {self.seconds} s ({100 * self.done // self.seconds}%) "
                  f"after {now - self.start:.0f} s", file=sys.stderr, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def video_seconds(video: str | Path) -> int:
    """Whole seconds the video covers (a last partial second counts from half a second on)."""
    import av

    from ..data.decode import DecodeError, open_input

    path = find_video(video)
    try:
        with open_input(path) as c:
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


run_shards_manifest = read_run_manifest
"""The training shards' manifest and where it came from: the one reader of run folders (``train.runfolder``)."""


def run_facts(manifest: dict[str, Any] | None, source: str, num_classes: int, img_size: int
              ) -> tuple[list[str], Preprocessing]:
    """Class names and preprocessing from the shards' manifest; neutral ones (named by number, frames at
    the model's size) with a warning when it is missing or lists another number of classes."""
    numbered = [f"class {k}" for k in range(num_classes)]
    if manifest is None:
        log.warning("class names unavailable (%s); naming classes by number, frames at %d px", source, img_size)
        return numbered, Preprocessing(img_size)
    p = manifest.get("preprocessing") or {}
    prep = Preprocessing(int(p.get("frame_size", img_size)), int(p.get("jpeg_quality", 90)),
                         int(p.get("sample_rate", 16000)))
    classes = list(manifest.get("classes") or [])
    if len(classes) == num_classes:
        return [str(c) for c in classes], prep
    log.warning("the shards' manifest (%s) lists %d classes, the model has %d: naming classes by number", source,
                len(classes), num_classes)
    return numbered, prep


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is usable here; use --device cpu")
    return device


def load_predictor(config: Path, checkpoint: Path, *, device: str = "auto", window_s: int = 0,
                   batch_size: int = 8, overrides: list[str] | tuple[str, ...] = (),
                   run_dir: str | Path | None = None) -> Predictor:
    """The model of ``config`` with the ``checkpoint`` export; class names and preprocessing from the run
    folder ``run_dir`` (default: the config's folder, as ``RUN/config.yaml`` is)."""
    import torch

    from ..config_load import load_config
    from ..models.model import build_model
    from ..tasks.registry import build_task
    from ..train.export import load_trainable

    cfg = load_config(config, list(overrides))
    _check_task(cfg.task, str(config))
    device = resolve_device(device)
    torch.manual_seed(cfg.train.seed)  # a random-init frozen backbone is rebuilt exactly as training built it
    task = build_task(cfg, None)
    model = build_model(cfg.model, task=task)
    load_trainable(model, checkpoint, cfg.model, task.signature())
    model.to(device).eval()
    manifest, source = run_shards_manifest(Path(config).parent if run_dir is None else run_dir, cfg.data.shards)
    return make_predictor(model, cfg, manifest, source, device, window_s, batch_size)


def load_model_predictor(model: str, *, device: str = "auto", window_s: int = 0, batch_size: int = 8) -> Predictor:
    """A model folder (`avpea export`, RUN/model) or hub id: class names and preprocessing from its config."""
    from .runmodel import load_model

    loaded = load_model(model=model, device=resolve_device(device), task="avel")
    return make_predictor(loaded.model, loaded.cfg, loaded.manifest, str(model), next(loaded.model.parameters()).device,
                          window_s, batch_size)


def make_predictor(model: Any, cfg: Any, manifest: dict[str, Any] | None, source: str, device: Any, window_s: int,
                   batch_size: int) -> Predictor:
    import torch

    classes, prep = run_facts(manifest, source, cfg.avel.num_classes, cfg.model.img_size)
    window = window_s or cfg.model.num_segments
    if window < 1 or batch_size < 1:
        raise ValueError(f"--window {window} and --batch-size {batch_size} must be >= 1")
    return Predictor(model, cfg, classes, prep, torch.device(device), window, batch_size)


def _check_task(task: str, where: str) -> None:
    if task != "avel":
        raise ValueError(f"avpea predict draws event timelines of AVEL runs; '{where}' trained task={task}: "
                         f"use `avpea search` (retrieval) or `avpea caption` (captioning) for VALOR runs")


# ---------------------------------------------------------------------------------------------
# Output


def predict_videos(predictor: Predictor, videos: list[str], out: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every video in turn; -> (timelines written, one problem line per video that failed)."""
    from ..data.decode import DecodeError
    from ..fileio import atomic_write_bytes, atomic_write_json
    from ..tasks.avel.timeline import summary_line, timeline_png

    from ..runtime.progress import track

    done, problems, stems = [], [], set()
    for video in track(videos, "predict", unit="video"):  # each long video also shows its own decoding
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
    p.add_argument("--model", help="a model folder (`avpea export`, or RUN/model) or a Hugging Face hub id")
    p.add_argument("--checkpoint", help="an adapter export (.safetensors), with --config")
    p.add_argument("--config", help="the config the export was trained with, with --checkpoint")
    p.add_argument("--out", help="output folder (default: RUN/predictions; with --model: ./predictions)")
    p.add_argument("--window", type=int, default=0, help="seconds per model window (default: model.num_segments)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(func=predict_cmd)


def predict_cmd(args: argparse.Namespace) -> int:
    model = getattr(args, "model", None)
    if sum(x is not None for x in (args.run, model, args.checkpoint or args.config)) > 1:
        raise ValueError("pass one of --run RUN, --model DIR, or --checkpoint FILE --config FILE")
    if model is not None:
        out = Path(args.out or "predictions")  # never inside the model folder: a new export replaces it whole
        predictor = load_model_predictor(model, device=args.device, window_s=args.window, batch_size=args.batch_size)
    else:
        config, checkpoint = resolve_model(args.run, args.checkpoint, args.config)
        if args.out is None and args.run is None:
            raise ValueError("--out DIR is needed with --checkpoint (the default is RUN/predictions with --run)")
        out = Path(args.out) if args.out else Path(args.run) / "predictions"
        predictor = load_predictor(config, checkpoint, device=args.device, window_s=args.window,
                                   batch_size=args.batch_size, run_dir=args.run)
    done, problems = predict_videos(predictor, args.videos, out)
    if problems:
        print(f"avpea predict: {len(done)} of {len(args.videos)} videos done; {len(problems)} skipped "
              f"(lines above)", file=sys.stderr)
    return 1 if problems else 0
