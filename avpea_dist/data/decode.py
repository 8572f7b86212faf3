"""Decode one clip with PyAV: a frame per one-second segment and the audio as 16 kHz mono.

Any container/codec FFmpeg reads works: the video is converted by swscale straight to the target size in
RGB, the audio is resampled by swresample and averaged over its channels. Every failure becomes a
``DecodeError`` whose message is the skip reason written to the manifest.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

# Stop decoding this far past the last segment centre: clips longer than the segments are cut.
_TAIL_S = 0.5


class DecodeError(Exception):
    """A clip that cannot become a sample; ``str(e)`` is the reason."""


def decode_clip(path: str | Path, *, segments: int = 10, size: int = 224, sample_rate: int = 16000,
                no_audio: str = "skip", min_seconds: float = 8.0,
                whole_audio: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """-> (frames uint8 (segments, size, size, 3), mono float32 audio of exactly segments * sample_rate).

    Segment i spans [i, i+1) s; its frame is the one nearest to i + 0.5 s. Audio shorter than the clip is
    padded with silence, longer is cut; with ``whole_audio`` the whole track is returned as it is.
    ``no_audio``: 'skip' raises for a clip without audio, 'silence'
    gives zeros. A clip whose video covers less than ``min_seconds`` is refused (a truncated download).
    """
    path = Path(path)
    if not path.is_file():
        raise DecodeError("missing file")
    if path.stat().st_size == 0:
        raise DecodeError("empty file")
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise DecodeError("no video stream")
            has_audio = bool(container.streams.audio)
            if not has_audio and no_audio == "skip":
                raise DecodeError("no audio stream (use --no-audio silence to keep such clips)")
            frames, last_t = _frames(container, segments, size)
        n = None if whole_audio else segments * sample_rate
        audio = _audio(path, n, sample_rate) if has_audio else None
    except DecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError, RuntimeError) as e:
        raise DecodeError(f"undecodable: {type(e).__name__}: {e}") from None
    if last_t + 1.0 < min_seconds:  # a frame shows ~1 s of the clip at the sparsest frame rates we accept
        raise DecodeError(f"too short: video ends at {last_t:.1f} s, need >= {min_seconds:.1f} s")
    if audio is None:
        audio = np.zeros(segments * sample_rate, np.float32)
    return frames, audio


def _frames(container: av.container.InputContainer, segments: int, size: int) -> tuple[np.ndarray, float]:
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1  # one process per core already: codec threads would oversubscribe
    targets = np.arange(segments) + 0.5
    best: list[av.VideoFrame | None] = [None] * segments
    dist = np.full(segments, np.inf)
    t0 = None
    last_t = -1.0
    for frame in container.decode(stream):
        if frame.pts is None or frame.time is None:
            continue
        t0 = frame.time if t0 is None else t0  # streams need not start at 0
        t = frame.time - t0
        last_t = max(last_t, t)
        closer = np.abs(targets - t) < dist
        if closer.any():
            dist[closer] = np.abs(targets - t)[closer]
            for i in np.flatnonzero(closer):
                best[i] = frame
        if t > targets[-1] + _TAIL_S:
            break
    if best[0] is None:
        raise DecodeError("no decodable video frames")
    out = np.empty((segments, size, size, 3), np.uint8)
    cache: dict[int, np.ndarray] = {}
    for i, frame in enumerate(best):
        key = id(frame)
        if key not in cache:
            cache[key] = frame.reformat(width=size, height=size, format="rgb24").to_ndarray()
        out[i] = cache[key]
    return out, last_t


def _audio(path: Path, n: int | None, sample_rate: int) -> np.ndarray:
    """The mono track at ``sample_rate``: exactly ``n`` samples (cut, or padded with silence), or all of it."""
    chunks: list[np.ndarray] = []
    filled = 0
    with av.open(str(path), metadata_errors="ignore") as container:
        stream = container.streams.audio[0]
        stream.codec_context.thread_count = 1
        # Keep the channels and average them ourselves: FFmpeg's downmix scales by -3 dB per channel.
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=sample_rate)
        for frame in container.decode(stream):
            for chunk in resampler.resample(frame):
                chunks.append(chunk.to_ndarray())  # planar: (channels, samples)
                filled += chunks[-1].shape[1]
            if n is not None and filled >= n:
                break
        else:
            chunks += [c.to_ndarray() for c in resampler.resample(None)]  # flush
    if not chunks or not sum(c.shape[1] for c in chunks):
        raise DecodeError("audio stream holds no decodable samples")
    mono = np.concatenate(chunks, axis=1).mean(0, dtype=np.float32)
    if n is None:
        return mono
    return np.pad(mono[:n], (0, n - len(mono[:n])))  # a short clip ends in silence
