"""`avpea caption --run RUN VIDEO.mp4 [...]` (or ``--model DIR``): one caption per video from a trained
captioning run or its exported model folder.

Each video goes through the preprocessing that built the run's shards (``train.runmodel.media_from_video``:
the segment sampling and sizes recorded in their manifest), then the run's encoder and decoder, decoded by
the very code evaluation uses (``CaptioningTask.caption``: beam ``captioning.beam`` unless ``--beam``).
A video that cannot be decoded gets one error line (or a JSON ``error``) and the others are still captioned;
the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..runtime.progress import track  # light: tqdm only when a bar is drawn


def register(sub: Any) -> None:
    p = sub.add_parser("caption", help="caption videos with a trained captioning run (VALOR-style AVC)",
                       description="Print one caption per video, decoded by a captioning run's best model.")
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (mp4 or anything FFmpeg reads)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--run", help="a captioning run folder (the train.out of `avpea train`)")
    who.add_argument("--model", help="a captioning model folder (`avpea export`, RUN/model) or a hub id")
    p.add_argument("--beam", type=int, default=None, help="beam width (default: the run's captioning.beam; 1 greedy)")
    p.add_argument("--which", choices=("best", "final"), default="best", help="the run's export to use")
    p.add_argument("--json", action="store_true", help="print a JSON list of {video, caption} (or error)")
    p.add_argument("--device", default="auto", help="'auto' (a GPU when usable), 'cpu' or 'cuda'")
    p.add_argument("--batch-size", type=int, default=8, help="videos decoded together")
    p.set_defaults(func=caption_cmd)


def caption_cmd(args: argparse.Namespace) -> int:
    if args.beam is not None and args.beam < 1:
        raise ValueError(f"--beam {args.beam}: give 1 (greedy) or more")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: give 1 or more")
    results = caption_videos(args.run, args.videos, beam=args.beam, which=args.which, device=args.device,
                             batch_size=args.batch_size, model=getattr(args, "model", None))
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for r in results:
            if "error" in r:
                print(f"{r['video']}: error: {r['error']}", file=sys.stderr)
            else:
                print(f"{r['video']}\t{r['caption']}")
    return 1 if any("error" in r for r in results) else 0


def caption_videos(run: str | None, videos: list[str], *, beam: int | None = None, which: str = "best",
                   device: str = "auto", batch_size: int = 8, model: str | None = None) -> list[dict[str, Any]]:
    """-> [{'video', 'caption'} or {'video', 'error'}] in the order of ``videos``; the model from a run
    folder (``run``) or a model folder / hub id (``model``)."""
    import torch

    from ..data.decode import DecodeError
    from .runmodel import load_model, media_from_video

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_model(run, model, which=which, device=device, task="captioning")
    cfg, task, net = loaded.cfg, loaded.task, loaded.model
    results: list[dict[str, Any]] = [{"video": str(v)} for v in videos]
    ready: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    for i, video in enumerate(track(videos, "caption: decoding", unit="video")):
        try:
            frames, audio = media_from_video(video, cfg, manifest=loaded.manifest)
            ready.append((i, frames, audio))
        except (DecodeError, OSError, ValueError) as e:
            results[i]["error"] = f"cannot read the video: {e}"
    for start in track(range(0, len(ready), batch_size), "caption: captioning", unit="batch"):
        chunk = ready[start:start + batch_size]
        frames = torch.stack([f for _, f, _ in chunk]).to(device)
        audio = torch.stack([a for _, _, a in chunk]).to(device)
        with torch.no_grad():
            texts = task.caption(net, frames, audio, beam=beam)
        for (i, _, _), text in zip(chunk, texts):
            results[i]["caption"] = text
    return results
