"""Decode one clip with PyAV: a frame per segment and the audio as 16 kHz mono.

Two segment samplings (``SAMPLINGS``): 'first' (AVE) = segment i is second [i, i+1) of the clip; 'even' (any
length, MUSIC-AVQA's 60 s videos, VALOR's 2-10 s clips) = segment i is centred at (i + 0.5) * duration /
segments, its frame the one nearest that centre, its audio the one-second window around it, shifted to lie
inside the clip (a clip shorter than ``segments`` seconds still gives ``segments`` segments, overlapping).
Where keyframes are close together, 'even' decodes only from the keyframe before each centre (the same
frames as decoding straight through, 3-4x less work on a 60 s video with a keyframe every 1-2 s), and where
the audio windows leave most of the track out, only around them (the same samples at 16 kHz; resampled
ones on a grid shifted by under a sample).

Any container/codec FFmpeg reads works: the video is converted by swscale straight to the target size in
RGB and turned upright as its display matrix says (``frame_rgb``: phone videos), the audio is resampled by
swresample and averaged over its channels. A long video decoded a window at a time: ``decode_windows``. Every failure becomes a
``DecodeError`` whose message is the skip reason written to the manifest.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from .features import centred_windows, window_starts
from .options import SAMPLINGS  # noqa: F401 (re-exported)

# Stop decoding this far past the last segment centre: clips longer than the segments are cut.
_TAIL_S = 0.5
# 'even' sampling seeks to the keyframe before each segment centre when the spans so decoded cover less than
# this share of the clip; with keyframes far apart, decoding straight through is cheaper.
_SEEK_WORTH = 0.6
_AUDIO_LEAD_S = 0.25  # decoded and dropped before each seeked audio window: the codec and resampler settle


def open_input(path: str | Path) -> "av.container.InputContainer":
    """``av.open`` for reading a video whose metadata may hold invalid UTF-8 (phone and camera files do).
    PyAV before 19 raises on such tags unless told ``metadata_errors="ignore"``; PyAV 19 dropped the
    argument (and refuses it), so it is passed only where it exists."""
    if int(av.__version__.split(".")[0]) < 19:
        return av.open(str(path), metadata_errors="ignore")
    return av.open(str(path))


class DecodeError(Exception):
    """A clip that cannot become a sample; ``str(e)`` is the reason."""


def decode_clip(path: str | Path, *, segments: int = 10, size: int = 224, sample_rate: int = 16000,
                no_audio: str = "skip", min_seconds: float = 8.0, whole_audio: bool = False,
                sampling: str = "first", start: float = 0.0,
                end: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """-> (frames uint8 (segments, size, size, 3), mono float32 audio of exactly segments * sample_rate).

    'first': segment i spans [i, i+1) s; its frame is the one nearest to i + 0.5 s. Audio shorter than the
    clip is padded with silence, longer is cut; with ``whole_audio`` the whole track is returned as it is.
    'even': the frames nearest the segment centres and the concatenated one-second windows around them
    (``features.centred_windows``). ``no_audio``: 'skip' raises for a clip without audio, 'silence'
    gives zeros. A clip whose video covers less than ``min_seconds`` is refused (a truncated download).
    ``start``/``end`` ('even' only): the clip is [start, end) s of the file, times from its first frame (a
    segment annotated in a whole video); ``end`` None or past the video: to its end.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling {sampling!r}: choose one of {', '.join(SAMPLINGS)}")
    if (start or end is not None) and sampling != "even":
        raise ValueError("a clip cut from a longer video (start/end) needs sampling 'even'")
    path = Path(path)
    if not path.is_file():
        raise DecodeError("not a file (a folder or device named like a video)" if path.exists() else "missing file")
    if path.stat().st_size == 0:
        raise DecodeError("empty file")
    try:
        with open_input(path) as container:
            if not container.streams.video:
                raise DecodeError("no video stream")
            has_audio = bool(container.streams.audio)
            if not has_audio and no_audio == "skip":
                raise DecodeError("no audio stream (use --no-audio silence to keep such clips)")
            if sampling == "even":
                index = _packet_index(path)
                full = _duration(container) or index.end - index.first
                duration = (full if end is None else min(end, full)) - start
                if duration <= 0:
                    raise DecodeError(f"the segment starts at {start:g} s, past the video's end ({full:.1f} s)")
                centres = start + (np.arange(segments) + 0.5) * duration / segments
                frames, last_t = _frames(container, centres, size, _seek_spans(index, centres), index.first)
                covered = duration
            else:
                frames, last_t = _frames(container, np.arange(segments) + 0.5, size)
                rate = container.streams.video[0].average_rate or container.streams.video[0].guessed_rate
                covered = last_t + (1 / float(rate) if rate else 1.0)  # the last frame is shown for one step
        if sampling == "even":
            if last_t + 1.0 < centres[-1]:  # the header promises more video than the file holds
                raise DecodeError(f"truncated: video ends at {last_t:.1f} s, its header says {full:.1f} s")
            starts = start + window_starts(centres - start, duration)
            audio = _centred_audio(path, starts, sample_rate) if has_audio else None
        else:
            n = None if whole_audio else segments * sample_rate
            audio = _audio(path, n, sample_rate) if has_audio else None
    except DecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError, RuntimeError) as e:
        raise DecodeError(f"undecodable: {type(e).__name__}: {e}") from None
    if covered + 1e-3 < min_seconds:
        raise DecodeError(f"too short: video ends at {covered:.2f} s, need >= {min_seconds:g} s")
    if audio is None:
        audio = np.zeros(segments * sample_rate, np.float32)
    return frames, audio


def _duration(container: av.container.InputContainer) -> float | None:
    """The video's length from the headers: the video stream's own, else the container's; None if neither."""
    stream = container.streams.video[0]
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


@dataclass(frozen=True)
class _PacketIndex:
    """The video packets' times (s), from a demux pass (no decoding)."""

    first: float
    end: float
    keyframes: list[tuple[float, int]]
    """(time, pts) of every keyframe, in time order."""


def _packet_index(path: Path) -> _PacketIndex:
    first = end = None
    keyframes = []
    with open_input(path) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            t0, t1 = packet.pts * packet.time_base, (packet.pts + (packet.duration or 0)) * packet.time_base
            first = t0 if first is None else min(first, t0)
            end = t1 if end is None else max(end, t1)
            if packet.is_keyframe:
                keyframes.append((float(t0), packet.pts))
    if first is None or end <= first:
        raise DecodeError("no video packets with time stamps: the duration is unknown")
    return _PacketIndex(float(first), float(end), sorted(keyframes))


def _seek_spans(index: _PacketIndex, targets: np.ndarray) -> list[tuple[int, float, float]] | None:
    """Where to decode to find the frame nearest each target (s from the first frame): from the last keyframe
    at or before the target to just past it, overlapping spans merged, as (keyframe pts, start s, end s).
    None (decode straight through) when the spans would cover most of the clip (keyframes far apart) or the
    first frame is not a keyframe. The frame nearest a target lies in its span: no frame before the
    keyframe is nearer than the keyframe itself, and the span ends past the first frame after the target."""
    keys = index.keyframes
    if not keys or keys[0][0] > index.first:
        return None
    times = [t - index.first for t, _ in keys]
    spans: list[tuple[int, float, float]] = []
    for target in targets:
        k = max(0, bisect.bisect_right(times, target) - 1)
        start, end = times[k], target + _TAIL_S
        if spans and start <= spans[-1][2]:
            spans[-1] = (spans[-1][0], spans[-1][1], max(spans[-1][2], end))
        else:
            spans.append((keys[k][1], start, end))
    covered = sum(end - start for _, start, end in spans)
    return spans if covered < _SEEK_WORTH * (index.end - index.first) else None


def _frames(container: av.container.InputContainer, targets: np.ndarray, size: int,
            spans: list[tuple[int, float, float]] | None = None, first: float = 0.0) -> tuple[np.ndarray, float]:
    """The frames nearest to the ``targets`` times (seconds from the first frame), decoding straight through
    or, with ``spans``, only there (seeking to each span's keyframe; ``first`` = the first frame's time);
    -> (frames, last time seen)."""
    segments = len(targets)
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1  # one process per core already: codec threads would oversubscribe
    best: list[av.VideoFrame | None] = [None] * segments
    dist = np.full(segments, np.inf)
    last_t = -1.0

    def visit(t: float, frame: av.VideoFrame) -> None:
        closer = np.abs(targets - t) < dist
        if closer.any():
            dist[closer] = np.abs(targets - t)[closer]
            for i in np.flatnonzero(closer):
                best[i] = frame

    if spans is None:
        t0 = None
        for frame in container.decode(stream):
            if frame.pts is None or frame.time is None:
                continue
            t0 = frame.time if t0 is None else t0  # streams need not start at 0
            t = frame.time - t0
            last_t = max(last_t, t)
            visit(t, frame)
            if t > targets[-1] + _TAIL_S:
                break
    else:
        for pts, start, end in spans:
            container.seek(pts, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts is None or frame.time is None:
                    continue
                t = frame.time - first
                if t < start - 1e-6:  # a leading frame of an open GOP: before the keyframe, never nearest
                    continue
                last_t = max(last_t, t)
                visit(t, frame)
                if t > end:
                    break
    if best[0] is None:
        raise DecodeError("no decodable video frames")
    out = np.empty((segments, size, size, 3), np.uint8)
    cache: dict[int, np.ndarray] = {}
    for i, frame in enumerate(best):
        key = id(frame)
        if key not in cache:
            cache[key] = frame_rgb(frame, size)
        out[i] = cache[key]
    return out, last_t


def frame_rgb(frame: av.VideoFrame, size: int) -> np.ndarray:
    """A decoded frame -> uint8 RGB (size, size, 3) the way a player shows it: turned and mirrored as its
    display matrix says (a phone's portrait video is stored sideways with such a matrix)."""
    rgb = frame.reformat(width=size, height=size, format="rgb24").to_ndarray()
    matrix = _display_matrix(frame)
    return rgb if matrix is None else np.ascontiguousarray(upright(rgb, matrix))


def _display_matrix(frame: av.VideoFrame) -> np.ndarray | None:
    """The frame's display matrix (FFmpeg's 3x3 int32 layout, 16.16 fixed point), None without one."""
    from av.sidedata.sidedata import Type

    data = frame.side_data.get(Type.DISPLAYMATRIX)
    if data is None:
        return None
    matrix = np.frombuffer(bytes(data), np.int32)
    return matrix if len(matrix) == 9 else None


def upright(rgb: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``rgb`` (H, W, 3) as displayed under ``matrix``: the quarter turns and flips FFmpeg's own player
    and ``ffmpeg`` apply (fftools' autorotate, case for case), so a clip looks as it does everywhere else.
    Any other angle is a ``DecodeError``: a tilted picture would need filling, which no training clip has."""
    a, b, c, e = (float(matrix[k]) / 65536 for k in (0, 1, 3, 4))
    # av_display_rotation_get: the counter-clockwise angle; fftools turns by its negative, in [0, 360).
    angle = np.degrees(np.arctan2(b / (np.hypot(b, e) or 1.0), a / (np.hypot(a, c) or 1.0)))
    theta = float(np.round(angle)) % 360.0
    if abs(theta - 90) < 1:
        return rgb.swapaxes(0, 1) if c > 0 else np.rot90(rgb, -1)  # transpose=cclock_flip : clock
    if abs(theta - 270) < 1:
        return np.rot90(rgb, -1)[::-1] if c < 0 else np.rot90(rgb, 1)  # transpose=clock_flip : cclock
    if abs(theta - 180) < 1:
        rgb = rgb[:, ::-1] if a < 0 else rgb
        return rgb[::-1] if e < 0 else rgb
    if theta < 1 or theta > 359:
        return rgb[::-1] if e < 0 else rgb
    raise DecodeError(f"the video's display matrix turns it by {theta:.0f} degrees clockwise; only quarter turns "
                      f"are applied (re-encode it upright: ffmpeg -i IN -c:a copy OUT)")


def _centred_audio(path: Path, starts: np.ndarray, sample_rate: int) -> np.ndarray:
    """'even' sampling: the one-second windows from ``starts`` (s), concatenated; decoded around the windows
    only when they leave most of the track out (a 60 s video), else straight through."""
    spans: list[list[float]] = []
    for s in starts:
        a, b = max(0.0, s - _AUDIO_LEAD_S), s + 1.0
        if spans and a <= spans[-1][1]:
            spans[-1][1] = b
        else:
            spans.append([a, b])
    if sum(b - a for a, b in spans) < _SEEK_WORTH * (starts[-1] + 1.0):
        return _seeked_windows(path, starts, spans, sample_rate)
    return centred_windows(_audio(path, int(round((starts[-1] + 1) * sample_rate)), sample_rate), starts, sample_rate)


def _seeked_windows(path: Path, starts: np.ndarray, spans: list[list[float]], sample_rate: int) -> np.ndarray:
    """The windows decoded span by span: seek before the span, resample afresh, place the samples by the first
    frame's time stamp (times from the track's first decoded frame, as straight decoding counts them)."""
    out = np.zeros((len(starts), sample_rate), np.float32)
    with open_input(path) as container:
        stream = container.streams.audio[0]
        stream.codec_context.thread_count = 1
        t0 = next((f.time for f in container.decode(stream) if f.time is not None), None)
        if t0 is None:
            raise DecodeError("audio stream holds no decodable samples")
        for a, b in spans:
            container.seek(int((t0 + a) / stream.time_base), stream=stream, backward=True, any_frame=False)
            resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=sample_rate)
            chunks, first = [], None
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                first = frame.time - t0 if first is None else first
                chunks += [c.to_ndarray() for c in resampler.resample(frame)]
                if frame.time - t0 > b:
                    break
            if not chunks:
                continue  # past the end of the track: silence, as straight decoding pads it
            mono = np.concatenate(chunks, axis=1).mean(0, dtype=np.float32)
            for i in np.flatnonzero((starts >= a - 1e-9) & (starts + 1.0 <= b + 1e-9)):
                j = int(round((starts[i] - first) * sample_rate))
                piece = mono[max(0, j):j + sample_rate]
                out[i, :len(piece)] = piece
    return out.reshape(-1)


def _audio(path: Path, n: int | None, sample_rate: int) -> np.ndarray:
    """The mono track at ``sample_rate``: exactly ``n`` samples (cut, or padded with silence), or all of it."""
    chunks: list[np.ndarray] = []
    filled = 0
    with open_input(path) as container:
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
