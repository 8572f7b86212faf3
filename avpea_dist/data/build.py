"""Encode one video into a sample's media members, in a pool of worker processes (every builder's decoding).

``encode_video`` decodes a clip into ``segments`` frames (JPEG) and log-mel windows (``fbank.npy``) as the
``BuildOptions`` say and never raises for a bad clip: it returns the skip reason. ``ordered_results`` runs it
over many videos in forkserver workers, in order, surviving a decoder that crashes its process.
``preprocessing`` is the manifest's record of those options. ``BuildOptions`` lives in ``builder.py``.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Iterator

from . import exit_with, worker_context
from .options import AUDIO_WINDOWS, BuildOptions
from .manifest import FBANK_FRAMES, MEL_BINS, SEGMENTS as NUM_SEGMENTS

__all__ = ["AUDIO_WINDOWS", "BuildOptions", "encode_clip", "encode_video", "ordered_results", "preprocessing"]


def preprocessing(opts: BuildOptions) -> dict[str, Any]:
    windows = {"exact": "segment i = audio second [i, i+1)",
               "linspace": "segment i = 1 s from np.linspace(0, len - 1.1 s, 10)[i] (LAVisH)"}[opts.audio_windows]
    return {"segments": NUM_SEGMENTS, "frame_size": opts.frame_size, "frame_format": "jpeg",
            "jpeg_quality": opts.jpeg_quality, "frame_pick": "nearest to segment centre, resized (no crop)",
            "sample_rate": opts.sample_rate, "audio_windows": opts.audio_windows, "audio_window_rule": windows,
            "mel_bins": MEL_BINS, "fbank_frames": FBANK_FRAMES,
            "frame_shift_ms": 10, "frame_length_ms": 25, "window": "hanning", "fbank_dtype": "float16",
            "fbank_layout": "(segments, mel_bins, fbank_frames), raw log-mel (not normalised)",
            "no_audio": opts.no_audio, "min_seconds": opts.min_seconds, **sampling_record(opts)}


def sampling_record(opts: BuildOptions) -> dict[str, Any]:
    """The ``preprocessing`` entries of the segment sampling; none for 'first', so that AVE manifests keep their
    bytes (readers take an absent ``sampling`` as 'first')."""
    if opts.sampling == "first":
        return {}
    return {"sampling": "even", "sampling_rule": "segment i centred at (i + 0.5) * duration / segments: the frame "
            "nearest that centre, the audio second around it (shifted to lie inside the clip)",
            "audio_window_rule": "segment i = the audio second around its centre (sampling_rule)"}


def encode_video(path: str | tuple[str, float, float | None], opts: BuildOptions) -> tuple[str, Any]:
    """Worker: -> ('ok', {member: bytes} without 'json') or ('skip', reason). Never raises for a bad clip.
    ``path``: a video file, or ``(file, start, end)``: the segment [start, end) s of a longer video."""
    from .decode import DecodeError, decode_clip
    from .features import audio_windows, fbank_segments, jpeg_bytes, npy_bytes

    path, start, end = (path, 0.0, None) if isinstance(path, str) else path
    try:
        frames, audio = decode_clip(path, segments=NUM_SEGMENTS, size=opts.frame_size, start=start, end=end,
                                    sample_rate=opts.sample_rate, no_audio=opts.no_audio,
                                    min_seconds=opts.min_seconds, whole_audio=opts.audio_windows == "linspace",
                                    sampling=opts.sampling)
        audio = audio_windows(audio, NUM_SEGMENTS, opts.sample_rate, opts.audio_windows)
    except DecodeError as e:
        return "skip", str(e)
    except Exception as e:  # a decoder bug must not take the good clips down with it
        return "skip", f"undecodable: {type(e).__name__}: {e}"
    members = {f"f{i}.jpg": jpeg_bytes(f, opts.jpeg_quality) for i, f in enumerate(frames)}
    members["fbank.npy"] = npy_bytes(fbank_segments(audio, NUM_SEGMENTS, opts.sample_rate))
    return "ok", members


def encode_clip(path: str, meta: dict[str, Any], opts: BuildOptions) -> tuple[str, Any]:
    """``encode_video`` plus the ``json`` member: one whole sample (benchmarks time this)."""
    status, payload = encode_video(path, opts)
    if status == "ok":
        payload["json"] = json.dumps(meta).encode()
    return status, payload


def init_worker(owner_pid: int) -> None:
    import torch

    torch.set_num_threads(1)
    exit_with(owner_pid)


def ordered_results(paths: list[str], opts: BuildOptions) -> Iterator[tuple[str, Any]]:
    """Run ``encode_video`` over paths in a forkserver pool, yielding results in order.

    A bounded window keeps memory flat. If the pool dies (a decoder segfault), each unfinished video is
    retried alone; the one that kills a pool by itself is skipped.
    """
    ctx = worker_context()
    window = max(2, 4 * opts.workers)
    i = 0
    while i < len(paths):
        pool = ProcessPoolExecutor(opts.workers, mp_context=ctx, initializer=init_worker, initargs=(os.getpid(),))
        pending: list[Future] = []
        broken = False
        try:
            while i < len(paths) and not broken:
                while len(pending) < window and i + len(pending) < len(paths):
                    pending.append(pool.submit(encode_video, paths[i + len(pending)], opts))
                try:
                    result = pending[0].result()
                except BrokenProcessPool:
                    broken = True
                    break
                pending.pop(0)
                i += 1
                yield result
        finally:
            pool.shutdown(wait=not broken, cancel_futures=True)
        if broken:  # retry the head video alone: either it succeeds or it is the culprit
            solo = ProcessPoolExecutor(1, mp_context=ctx, initializer=init_worker, initargs=(os.getpid(),))
            try:
                result = solo.submit(encode_video, paths[i], opts).result()
            except BrokenProcessPool:
                result = ("skip", "decoder crashed the worker process")
            finally:
                solo.shutdown(wait=False, cancel_futures=True)
            i += 1
            yield result
