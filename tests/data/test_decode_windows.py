"""A long video decoded window by window (``data.decode_windows``, what `avpea predict` uses): the windows
are exactly the whole-video decode, and what is held at once does not grow with the video."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from avpea_dist.data.decode import DecodeError, decode_clip
from avpea_dist.data.decode_windows import decode_windows
from avpea_dist.datasets.ave.synth import SynthSpec, write_mp4

from .media import QUADRANTS, quadrant_levels, rotated_mp4, timed_mp4


def _whole(path: Path, seconds: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    return decode_clip(path, segments=seconds, size=size, min_seconds=0.0)


def _peak(fn) -> int:
    """Peak bytes traced (numpy buffers included) while ``fn`` runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_five_minutes_in_windows_equal_the_whole_decode_in_bounded_memory(tmp_path: Path) -> None:
    """300 s at 1 fps (every second's centre equidistant from two frames: ties as the whole decode breaks
    them), keyframes far apart; each window's frames and samples are the whole decode's, bit for bit, while
    the windowed pass holds a few windows at most (the whole decode: all 300 s, 19 MB of audio alone)."""
    path = timed_mp4(tmp_path / "long.mp4", 300.0, fps=1, size=32, aac_fast=True)
    whole: list[np.ndarray] = []
    whole_peak = _peak(lambda: whole.extend(_whole(path, 300, 32)))
    frames, audio = whole
    sizes = []

    def windowed() -> None:
        start = 0
        for f, a in decode_windows(path, 300, window=20, size=32):
            assert np.array_equal(f, frames[start:start + len(f)])
            assert np.array_equal(a, audio[start * 16000:(start + len(f)) * 16000])
            start += len(f)
            sizes.append(len(f))

    windowed_peak = _peak(windowed)
    assert sizes == [20] * 15
    window_bytes = 20 * 16000 * 4
    assert windowed_peak < 5 * window_bytes and 8 * windowed_peak < whole_peak, (windowed_peak, whole_peak)


def test_uneven_windows_other_rates_and_a_short_track(tmp_path: Path) -> None:
    """25 fps mpeg4 with 44.1 kHz stereo, cut into windows of 7 (the last one 2 s), and a video whose sound
    track stops early (the rest is silence, as in the whole decode)."""
    rng = np.random.default_rng(0)
    spec = SynthSpec(size=32, fps=25, sample_rate=44100, channels=2, video_codec="mpeg4", seconds=16.0)
    pics = np.repeat(rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), 25, axis=0)
    t = np.arange(16 * 44100) / 44100
    write_mp4(tmp_path / "a.mp4", pics, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), spec)
    write_mp4(tmp_path / "b.mp4", pics, (0.3 * np.sin(2 * np.pi * 440 * t[:9 * 44100])).astype(np.float32), spec)
    for name in ("a", "b"):
        frames, audio = _whole(tmp_path / f"{name}.mp4", 16, 24)
        windows = list(decode_windows(tmp_path / f"{name}.mp4", 16, window=7, size=24))
        assert [len(f) for f, _ in windows] == [7, 7, 2]
        assert np.array_equal(np.concatenate([f for f, _ in windows]), frames)
        assert np.array_equal(np.concatenate([a for _, a in windows]), audio)
    assert not audio[10 * 16000:].any() and audio[:8 * 16000].any()


def test_more_seconds_than_the_video_holds_repeat_its_last_frame(tmp_path: Path) -> None:
    path = timed_mp4(tmp_path / "c.mp4", 6.0, fps=2, size=32)
    frames, audio = _whole(path, 9, 32)
    windows = list(decode_windows(path, 9, window=4, size=32))
    assert np.array_equal(np.concatenate([f for f, _ in windows]), frames)
    assert np.array_equal(np.concatenate([a for _, a in windows]), audio)
    assert np.array_equal(frames[6], frames[8])


def test_rotated_and_broken_videos(tmp_path: Path) -> None:
    """The windows come out upright like the whole decode; a file without sound, or cut short, is one
    DecodeError with the reason."""
    for frames, _ in decode_windows(rotated_mp4(tmp_path / "phone.mp4", -90, sound=True), 3, window=2, size=32):
        assert all(np.allclose(quadrant_levels(f), QUADRANTS, atol=8) for f in frames)
    with pytest.raises(DecodeError, match="no audio stream"):
        next(decode_windows(rotated_mp4(tmp_path / "mute.mp4", -90), 3, window=2, size=32))
    good = timed_mp4(tmp_path / "good.mp4", 12.0, fps=4, size=32)
    (tmp_path / "cut.mp4").write_bytes(good.read_bytes()[:2000])
    with pytest.raises(DecodeError, match="undecodable"):
        list(decode_windows(tmp_path / "cut.mp4", 12, window=5, size=32))
