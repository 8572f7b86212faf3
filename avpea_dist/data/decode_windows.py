"""Decode a long video window by window: one frame and one second of audio per second, in bounded memory.

``decode_clip(path, segments=N, sampling='first')`` holds a whole video at once (its frames, its audio, and
until the end one decoded source-resolution frame per second: gigabytes for an hour of 1080p). Here one
pass over the file (a video and an audio reader, each moving forward only) yields the seconds ``window``
at a time; concatenated, the windows are exactly that whole-video decode (same frames, same samples), and
no more than a window of output plus a few source frames is held at any moment.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from .decode import _TAIL_S, DecodeError, frame_rgb, open_input


def decode_windows(path: str | Path, seconds: int, *, window: int, size: int = 224,
                   sample_rate: int = 16000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Seconds [0, ``seconds``) of a video with a sound track, ``window`` seconds per item: (frames uint8
    (w, size, size, 3), mono float32 audio (w * sample_rate,)), w = ``window`` except for a shorter last
    one. Second i's frame is the one nearest i + 0.5 s (from the first frame); audio past the track's end
    is silence. Raises ``DecodeError`` (the reason) for a file that cannot be read, also midway."""
    if seconds < 1 or window < 1:
        raise ValueError(f"seconds={seconds} and window={window} must be >= 1")
    path = Path(path)
    try:
        with open_input(path) as video, open_input(path) as sound:
            if not video.streams.video:
                raise DecodeError("no video stream")
            if not sound.streams.audio:
                raise DecodeError("no audio stream (the model needs the sound track)")
            frames = _frame_windows(video, seconds, window, size)
            audio = _audio_windows(sound, seconds, window, sample_rate)
            for pictures, samples in zip(frames, audio):
                yield pictures, samples
    except DecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError, RuntimeError) as e:
        raise DecodeError(f"undecodable: {type(e).__name__}: {e}") from None


def _frame_windows(container: av.container.InputContainer, seconds: int, window: int,
                   size: int) -> Iterator[np.ndarray]:
    """The frame nearest each second's centre, ``window`` seconds at a time, decoding straight through.

    Frames come out in time order, so a centre's nearest frame is settled once a frame past it has been
    seen (``_TAIL_S`` past, as the whole-video decode stops): it is converted then and its source frame let
    go. The last two frames seen carry into the next window: of all earlier frames they are the nearest to
    any later centre (the one before and the one after it), visited in order so ties go to the earlier as
    in the whole-video decode."""
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1  # one process per core already: codec threads would oversubscribe
    decoded = (f for f in container.decode(stream) if f.pts is not None and f.time is not None)
    recent: deque[tuple[float, av.VideoFrame]] = deque(maxlen=2)
    t0: float | None = None
    ended = False
    for start in range(0, seconds, window):
        targets = np.arange(start, min(seconds, start + window)) + 0.5
        out = np.empty((len(targets), size, size, 3), np.uint8)
        best: list[av.VideoFrame | None] = [None] * len(targets)
        dist = np.full(len(targets), np.inf)
        settled = 0
        converted: tuple[av.VideoFrame | None, np.ndarray | None] = (None, None)

        def settle(upto: int) -> None:
            nonlocal settled, converted
            for i in range(settled, upto):
                if best[i] is None:
                    raise DecodeError("no decodable video frames")
                if best[i] is not converted[0]:  # neighbouring seconds often share a frame (low frame rates)
                    converted = (best[i], frame_rgb(best[i], size))
                out[i] = converted[1]
                best[i] = None
            settled = max(settled, upto)

        def visit(t: float, frame: av.VideoFrame) -> None:
            closer = np.abs(targets - t) < dist
            closer[:settled] = False
            dist[closer] = np.abs(targets - t)[closer]
            for i in np.flatnonzero(closer):
                best[i] = frame

        for t, frame in recent:
            visit(t, frame)
        while not ended:
            frame = next(decoded, None)
            if frame is None:
                ended = True
                break
            t0 = frame.time if t0 is None else t0  # streams need not start at 0
            t = frame.time - t0
            visit(t, frame)
            recent.append((t, frame))
            settle(int(np.searchsorted(targets, t - _TAIL_S)))
            if t > targets[-1] + _TAIL_S:
                break
        settle(len(targets))  # the rest: the frame after them seen, or the video over (its last frame nearest)
        yield out


def _audio_windows(container: av.container.InputContainer, seconds: int, window: int,
                   sample_rate: int) -> Iterator[np.ndarray]:
    """The mono track at ``sample_rate``, ``window`` seconds at a time (silence past its end): the same
    resampler over the same frames as the whole-track decode (``decode._audio``), so the same samples."""
    stream = container.streams.audio[0]
    stream.codec_context.thread_count = 1
    # Keep the channels and average them ourselves: FFmpeg's downmix scales by -3 dB per channel.
    resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=sample_rate)
    decoded = container.decode(stream)
    pending: list[np.ndarray] = []  # mono pieces not yet handed out
    held = 0
    ended = got_any = False
    for start in range(0, seconds, window):
        need = (min(seconds, start + window) - start) * sample_rate
        while held < need and not ended:
            frame = next(decoded, None)
            chunks = resampler.resample(frame)  # None flushes the resampler at the end
            ended = frame is None
            for chunk in chunks:
                planar = chunk.to_ndarray()  # (channels, samples)
                if planar.shape[1]:
                    pending.append(planar.mean(0, dtype=np.float32))
                    held += planar.shape[1]
                    got_any = True
        if not got_any:
            raise DecodeError("audio stream holds no decodable samples")
        mono = np.concatenate(pending) if pending else np.zeros(0, np.float32)
        out, rest = mono[:need], mono[need:].copy()  # a copy: the rest alone stays held, not the whole piece
        pending, held = ([rest] if len(rest) else []), len(rest)
        yield np.pad(out, (0, need - len(out)))  # a short track ends in silence
