"""Build WebDataset shards from an AVE-layout folder: parallel, atomic, resumable, tolerant of bad clips.

The plan is fixed by the annotation files: each split's clips, in file order, are cut into shards of
``shard_size`` clips (``train-000000.tar`` ...). Worker processes decode clips; the main process writes
each shard atomically in plan order and rewrites ``manifest.json`` after every shard, so an interrupted
build resumes from the first unfinished shard. A clip that cannot be decoded is skipped with its reason;
a worker killed by a crashing decoder costs only the clip that crashed it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from . import exit_with, worker_context
from ..io import atomic_open, atomic_write_json, sha256_file
from .ave import NUM_SEGMENTS, Clip, read_ave
from .manifest import FBANK_FRAMES, FORMAT, MANIFEST, MEL_BINS, VERSION, member_names
from .tario import TarShardWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildOptions:
    workers: int = 1
    """Decoding processes."""
    shard_size: int = 128
    """Clips per shard (~0.45 MB each at 224x224)."""
    no_audio: str = "skip"
    """Clips without an audio stream: 'skip' them or keep them with 'silence'."""
    min_seconds: float = 8.0
    """Shortest video accepted; shorter ones are truncated downloads."""
    frame_size: int = 224
    jpeg_quality: int = 90
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"--workers={self.workers} must be >= 1")
        if self.shard_size < 1:
            raise ValueError(f"--shard-size={self.shard_size} must be >= 1")
        if self.no_audio not in ("skip", "silence"):
            raise ValueError(f"--no-audio={self.no_audio!r} must be 'skip' or 'silence'")
        if not 0 < self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality={self.jpeg_quality} must lie in (0, 100]")


def preprocessing(opts: BuildOptions) -> dict[str, Any]:
    return {"segments": NUM_SEGMENTS, "frame_size": opts.frame_size, "frame_format": "jpeg",
            "jpeg_quality": opts.jpeg_quality, "frame_pick": "nearest to segment centre, resized (no crop)",
            "sample_rate": opts.sample_rate, "mel_bins": MEL_BINS, "fbank_frames": FBANK_FRAMES,
            "frame_shift_ms": 10, "frame_length_ms": 25, "window": "hanning", "fbank_dtype": "float16",
            "fbank_layout": "(segments, mel_bins, fbank_frames), raw log-mel (not normalised)",
            "no_audio": opts.no_audio, "min_seconds": opts.min_seconds}


def encode_clip(path: str, meta: dict[str, Any], opts: BuildOptions) -> tuple[str, Any]:
    """Worker: -> ('ok', {member: bytes}) or ('skip', reason). Never raises for a bad clip."""
    from .decode import DecodeError, decode_clip
    from .features import fbank_segments, jpeg_bytes, npy_bytes

    try:
        frames, audio = decode_clip(path, segments=NUM_SEGMENTS, size=opts.frame_size,
                                    sample_rate=opts.sample_rate, no_audio=opts.no_audio,
                                    min_seconds=opts.min_seconds)
    except DecodeError as e:
        return "skip", str(e)
    except Exception as e:  # a decoder bug must not take the good clips down with it
        return "skip", f"undecodable: {type(e).__name__}: {e}"
    members = {f"f{i}.jpg": jpeg_bytes(f, opts.jpeg_quality) for i, f in enumerate(frames)}
    members["fbank.npy"] = npy_bytes(fbank_segments(audio, NUM_SEGMENTS, opts.sample_rate))
    members["json"] = json.dumps(meta).encode()
    return "ok", members


def _init_worker(owner_pid: int) -> None:
    import torch

    torch.set_num_threads(1)
    exit_with(owner_pid)


@dataclass
class _Shard:
    split: str
    name: str
    clips: list[Clip]


def _plan(splits: dict[str, list[Clip]], shard_size: int) -> list[_Shard]:
    return [_Shard(split, f"{split}-{i // shard_size:06d}", clips[i:i + shard_size])
            for split, clips in splits.items() for i in range(0, len(clips), shard_size)]


def _fingerprint(classes: list[str], plan: list[_Shard], opts: BuildOptions) -> str:
    body = {"pre": preprocessing(opts), "classes": classes,
            "plan": [[s.name, [asdict(c) for c in s.clips]] for s in plan]}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _ordered_results(tasks: list[tuple[str, dict, BuildOptions]], workers: int) -> Iterator[tuple[str, Any]]:
    """Run ``encode_clip`` over tasks in a forkserver pool, yielding results in task order.

    A bounded window keeps memory flat. If the pool dies (a decoder segfault), each unfinished clip is
    retried alone; the one that kills a pool by itself is skipped.
    """
    ctx = worker_context()
    window = max(2, 4 * workers)
    i = 0
    while i < len(tasks):
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),))
        pending: list[Future] = []
        broken = False
        try:
            while i < len(tasks) and not broken:
                while len(pending) < window and i + len(pending) < len(tasks):
                    pending.append(pool.submit(encode_clip, *tasks[i + len(pending)]))
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
        if broken:  # retry the head clip alone: either it succeeds or it is the culprit
            solo = ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),))
            try:
                result = solo.submit(encode_clip, *tasks[i]).result()
            except BrokenProcessPool:
                result = ("skip", "decoder crashed the worker process")
            finally:
                solo.shutdown(wait=False, cancel_futures=True)
            i += 1
            yield result


def _load_previous(out: Path, fingerprint: str) -> dict[str, Any] | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        old = json.loads(path.read_text())
        old_fp = old["build"]["fingerprint"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path} exists but is not a shard manifest; choose an empty --out folder") from None
    if old_fp != fingerprint:
        raise ValueError(f"{out} holds shards built from other annotations or options "
                         f"(fingerprint {old_fp}, now {fingerprint}); choose a new --out or delete {out}")
    return old


def _manifest(classes: list[str], opts: BuildOptions, source: str, fingerprint: str,
              records: dict[str, dict[str, Any]], plan: list[_Shard], complete: bool) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    for shard in plan:
        s = splits.setdefault(shard.split, {"samples": 0, "shards": [], "skipped": [],
                                            "segment_histogram": [0] * len(classes)})
        rec = records.get(shard.name)
        if rec is None:
            continue
        s["skipped"] += rec["skipped"]
        if rec["file"] is not None:
            s["samples"] += rec["samples"]
            s["shards"].append({k: rec[k] for k in ("file", "sha256", "bytes", "samples")})
            s["segment_histogram"] = [a + b for a, b in zip(s["segment_histogram"], rec["histogram"])]
    return {"format": FORMAT, "version": VERSION, "complete": complete, "source": source,
            "preprocessing": preprocessing(opts), "members": member_names(), "classes": classes,
            "shard_size": opts.shard_size, "splits": splits,
            "build": {"fingerprint": fingerprint, "done": records}}


def build_ave(root: str | Path, out: str | Path, opts: BuildOptions = BuildOptions(),
              progress: bool = True) -> dict[str, Any]:
    """Build (or resume) shards of the AVE-layout folder ``root`` into ``out``; -> the final manifest.

    The returned manifest has an extra ``"stats"`` entry (not stored): written/skipped/reused counts and
    seconds.
    """
    from tqdm import tqdm

    root, out = Path(root), Path(out)
    classes, splits = read_ave(root)
    plan = _plan(splits, opts.shard_size)
    fingerprint = _fingerprint(classes, plan, opts)
    out.mkdir(parents=True, exist_ok=True)
    old = _load_previous(out, fingerprint)
    records: dict[str, dict[str, Any]] = {}
    for name, rec in (old or {}).get("build", {}).get("done", {}).items():
        if rec["file"] is None or ((out / rec["file"]).exists() and sha256_file(out / rec["file"]) == rec["sha256"]):
            records[name] = rec  # finished earlier and intact: reuse
    reused = len(records)
    todo = [s for s in plan if s.name not in records]
    tasks = [(str(root / "AVE" / f"{c.id}.mp4"),
              {"id": c.id, "category": c.category, "labels": c.labels(classes), "split": c.split,
               "start": c.start, "end": c.end, "quality": c.quality, "source": f"AVE/{c.id}.mp4"}, opts)
             for s in todo for c in s.clips]
    t0 = time.perf_counter()
    results = _ordered_results(tasks, opts.workers) if tasks else iter(())
    bar = tqdm(total=len(tasks), desc="build", unit="clip", disable=not progress)
    written = 0
    for shard in todo:
        rec: dict[str, Any] = {"file": None, "sha256": None, "bytes": 0, "samples": 0, "skipped": [],
                               "histogram": [0] * len(classes)}
        path = out / f"{shard.name}.tar"
        with atomic_open(path, "wb") as f:
            writer = TarShardWriter(f)
            for clip in shard.clips:
                status, payload = next(results)
                bar.update(1)
                if status == "skip":
                    rec["skipped"].append({"id": clip.id, "reason": payload})
                    log.debug("skipped %s: %s", clip.id, payload)  # listed in the summary
                    continue
                writer.write(clip.id, payload)
                for label in json.loads(payload["json"])["labels"]:
                    rec["histogram"][label] += 1
            writer.close()
        if writer.samples:
            rec.update(file=path.name, sha256=sha256_file(path), bytes=path.stat().st_size, samples=writer.samples)
            written += writer.samples
        else:
            path.unlink()  # every clip of this shard was skipped: no empty tar
        records[shard.name] = rec
        atomic_write_json(out / MANIFEST, _manifest(classes, opts, str(root), fingerprint, records, plan, False))
    bar.close()
    manifest = _manifest(classes, opts, str(root), fingerprint, records, plan, True)
    atomic_write_json(out / MANIFEST, manifest)
    manifest["stats"] = {"written": written, "reused_shards": reused, "built_shards": len(todo),
                         "clips_processed": len(tasks), "skipped": sum(len(r["skipped"]) for r in records.values()),
                         "seconds": time.perf_counter() - t0}
    return manifest
