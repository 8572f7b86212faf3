"""Build WebDataset shards from an AVE-layout folder: parallel, atomic, resumable, tolerant of bad clips.

The plan (``plan.py``) shuffles each split's annotation records with a seed and cuts them into shards of
``shard_size`` records (``train-000000.tar`` ...); a build task takes every ``tasks``-th shard of it. Worker
processes decode each video once, however many records use it; the task writes one sample per record (its
own key and labels), each shard atomically in plan order, and after every shard its part record
(``parts.py``), so an interrupted task resumes from its first unfinished shard. A video that cannot be
decoded skips its records with the reason; a worker killed by a crashing decoder costs only that video.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from . import exit_with, worker_context
from ..fileio import atomic_open, sha256_file
from ..datasets.ave.release import NUM_SEGMENTS, Clip, read_ave
from .manifest import FBANK_FRAMES, MEL_BINS
from .parts import intact, load_done, mark_unfinished, merge_if_complete, write_part
from .plan import Shard, fingerprint, make_plan, task_shards
from .tario import TarShardWriter

log = logging.getLogger(__name__)

AUDIO_WINDOWS = ("exact", "linspace")
ZERO_DURATION_NOTE = ("zero-duration event (StartTime = EndTime): kept with all segments background, "
                      "as AVE's label rule gives")


@dataclass(frozen=True)
class BuildOptions:
    workers: int = 1
    """Decoding processes (per build task)."""
    shard_size: int = 128
    """Records per shard (~0.45 MB each at 224x224)."""
    no_audio: str = "skip"
    """Clips without an audio stream: 'skip' them or keep them with 'silence'."""
    min_seconds: float = 8.0
    """Shortest video accepted; shorter ones are truncated downloads."""
    frame_size: int = 224
    jpeg_quality: int = 90
    sample_rate: int = 16000
    order_seed: int = 0
    """Seed of the per-split record shuffle before shards are cut (recorded as ``order_seed``)."""
    audio_windows: str = "exact"
    """Audio of segment i: 'exact' = second [i, i+1); 'linspace' = LAVisH's one-second windows starting at
    ``np.linspace(0, len - 1.1 s, 10)`` over the whole audio track."""
    sampling: str = "first"
    """Segments: 'first' = second i of the clip (AVE's per-second labels); 'even' = spread evenly over a clip
    of any length (segment i centred at (i + 0.5) * duration / 10, its audio the second around that centre)."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"--workers={self.workers} must be >= 1")
        if self.shard_size < 1:
            raise ValueError(f"--shard-size={self.shard_size} must be >= 1")
        if self.no_audio not in ("skip", "silence"):
            raise ValueError(f"--no-audio={self.no_audio!r} must be 'skip' or 'silence'")
        if not 0 < self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality={self.jpeg_quality} must lie in (0, 100]")
        if self.audio_windows not in AUDIO_WINDOWS:
            raise ValueError(f"--audio-windows={self.audio_windows!r} must be one of {', '.join(AUDIO_WINDOWS)}")
        from .decode import SAMPLINGS  # PyAV: only where options are made

        if self.sampling not in SAMPLINGS:
            raise ValueError(f"--sampling={self.sampling!r} must be one of {', '.join(SAMPLINGS)}")
        if self.sampling == "even" and self.audio_windows != "exact":
            raise ValueError("--sampling even takes each segment's audio around its centre: "
                             "leave --audio-windows at 'exact'")


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


def encode_video(path: str, opts: BuildOptions) -> tuple[str, Any]:
    """Worker: -> ('ok', {member: bytes} without 'json') or ('skip', reason). Never raises for a bad clip."""
    from .decode import DecodeError, decode_clip
    from .features import audio_windows, fbank_segments, jpeg_bytes, npy_bytes

    try:
        frames, audio = decode_clip(path, segments=NUM_SEGMENTS, size=opts.frame_size,
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


class _Videos:
    """Each video's encoding, decoded once and held only while records still need it."""

    def __init__(self, root: Path, shards: list[Shard], opts: BuildOptions) -> None:
        self.uses: dict[str, int] = {}
        for c in (c for s in shards for c in s.clips):
            self.uses[c.id] = self.uses.get(c.id, 0) + 1
        paths = [str(root / "AVE" / f"{vid}.mp4") for vid in self.uses]  # first-use order
        self.results = ordered_results(paths, opts) if paths else iter(())
        self.held: dict[str, tuple[str, Any]] = {}
        self.decoded = len(paths)

    def take(self, vid: str) -> tuple[str, Any]:
        result = self.held.pop(vid) if vid in self.held else next(self.results)
        self.uses[vid] -= 1
        if self.uses[vid]:
            self.held[vid] = result
        return result


def _meta(c: Clip, classes: list[str]) -> dict[str, Any]:
    return {"id": c.id, "key": c.key, "category": c.category, "labels": c.labels(classes), "split": c.split,
            "start": c.start, "end": c.end, "quality": c.quality, "source": f"AVE/{c.id}.mp4"}


def _write_shard(out: Path, shard: Shard, videos: _Videos, classes: list[str], tick: Callable[[], None]) -> dict:
    rec: dict[str, Any] = {"file": None, "sha256": None, "bytes": 0, "samples": 0, "skipped": [], "notes": [],
                           "histogram": [0] * len(classes)}
    path = out / f"{shard.name}.tar"
    with atomic_open(path, "wb") as f:
        writer = TarShardWriter(f)
        for clip in shard.clips:
            status, payload = videos.take(clip.id)
            tick()
            if status == "skip":
                rec["skipped"].append({"id": clip.id, "key": clip.key, "reason": payload})
                log.debug("skipped %s: %s", clip.key, payload)  # listed in the summary
                continue
            meta = _meta(clip, classes)
            writer.write(clip.key, {**payload, "json": json.dumps(meta).encode()})
            if clip.zero_duration:
                rec["notes"].append({"id": clip.id, "key": clip.key, "note": ZERO_DURATION_NOTE})
            for label in meta["labels"]:
                rec["histogram"][label] += 1
        writer.close()
    if writer.samples:
        rec.update(file=path.name, sha256=sha256_file(path), bytes=path.stat().st_size, samples=writer.samples)
    else:
        path.unlink()  # every record of this shard was skipped: no empty tar
    return rec


def build_task(root: str | Path, out: str | Path, opts: BuildOptions = BuildOptions(), *, task: int = 0,
               tasks: int = 1, run: str | None = None, progress: bool = True,
               prepare: Callable[[list[Clip]], None] | None = None) -> dict[str, Any]:
    """Build (or resume) task ``task`` of ``tasks``: shards task, task + tasks, ... of the plan of ``root``.

    ``run`` names the job the tasks belong to (its id); ``prepare(records)`` runs first with the records
    about to be decoded (the synthetic builder writes their videos there). -> ``{"manifest": the merged
    manifest when this task finished last, else None, "stats": {...}}``.
    """
    from tqdm import tqdm

    root, out = Path(root), Path(out)
    classes, splits = read_ave(root)
    plan = make_plan(splits, opts.shard_size, opts.order_seed)
    pre = preprocessing(opts)
    fp = fingerprint(classes, plan, pre)
    out.mkdir(parents=True, exist_ok=True)
    previous = load_done(out, fp)
    mine = task_shards(plan, task, tasks)
    done = {s.name: previous[s.name] for s in mine if s.name in previous and intact(out, previous[s.name])}
    todo = [s for s in mine if s.name not in done]
    write_part(out, task, tasks, fp, done, run=run, finished=False)
    if todo:
        mark_unfinished(out)
    if prepare is not None:
        prepare([c for s in todo for c in s.clips])
    t0 = time.perf_counter()
    videos = _Videos(root, todo, opts)
    bar = tqdm(total=sum(len(s.clips) for s in todo), desc=f"build {task + 1}/{tasks}", unit="clip",
               disable=not progress)
    for shard in todo:
        done[shard.name] = _write_shard(out, shard, videos, classes, lambda: bar.update(1))
        write_part(out, task, tasks, fp, done, run=run, finished=False)
    bar.close()
    write_part(out, task, tasks, fp, done, run=run, finished=True)
    seconds = time.perf_counter() - t0
    manifest = merge_if_complete(out, plan, tasks, run, classes=classes, preprocessing=pre,
                                 source=str(root.resolve()), fingerprint=fp, splits=splits, order_seed=opts.order_seed,
                                 shard_size=opts.shard_size)
    records = sum(len(s.clips) for s in todo)
    return {"manifest": manifest, "stats": {
        "task": task, "tasks": tasks, "shards": len(mine), "built_shards": len(todo),
        "reused_shards": len(mine) - len(todo), "clips_processed": records, "videos_decoded": videos.decoded,
        "written": sum(done[s.name]["samples"] for s in todo),
        "skipped": sum(len(done[s.name]["skipped"]) for s in todo), "seconds": round(seconds, 3),
        "clips_per_s": round(records / seconds, 3) if records and seconds > 0 else 0.0}}


def build_ave(root: str | Path, out: str | Path, opts: BuildOptions = BuildOptions(),
              progress: bool = True) -> dict[str, Any]:
    """Build (or resume) all shards of the AVE-layout folder ``root`` into ``out`` in one task; -> the
    manifest, with an extra ``"stats"`` entry (not stored)."""
    result = build_task(root, out, opts, progress=progress)
    manifest = result["manifest"]
    if manifest is None:  # another task layout left shards unfinished: cannot happen with one task
        raise RuntimeError(f"{out}: shards are missing after a one-task build")
    manifest["stats"] = result["stats"]
    return manifest
