"""Decoding real mp4 files of many shapes, and the fbank features, with PyAV and torchaudio."""

from pathlib import Path

import numpy as np
import pytest

from avpea_dist.data.decode import DecodeError, decode_clip
from avpea_dist.data.features import fbank_segments
from avpea_dist.datasets.ave.synth import SynthSpec, write_mp4


def _clip(path: Path, seconds: float, spec: SynthSpec, height: int, width: int, audio: bool = True) -> Path:
    """Frame brightness encodes the second it belongs to (20 * i + 10); the audio is a 1 kHz tone."""
    n = int(round(seconds * spec.fps))
    frames = np.stack([np.full((height, width, 3), 20 * int(j / spec.fps) + 10, np.uint8) for j in range(n)])
    t = np.arange(int(round(seconds * spec.sample_rate))) / spec.sample_rate
    wave = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32) if audio else np.zeros(0, np.float32)
    write_mp4(path, frames, wave, spec)
    return path


@pytest.mark.parametrize("seconds, spec, hw", [
    (9.6, SynthSpec(fps=25, sample_rate=44100, channels=2, video_codec="mpeg4"), (120, 160)),
    (10.4, SynthSpec(fps=4, sample_rate=16000, channels=1), (96, 128)),
    (10.0, SynthSpec(fps=30, sample_rate=48000, channels=2), (240, 320)),
])
def test_any_rate_size_codec_gives_ten_segments(tmp_path: Path, seconds: float, spec: SynthSpec, hw) -> None:
    path = _clip(tmp_path / "c.mp4", seconds, spec, *hw)
    frames, audio = decode_clip(path)
    assert frames.shape == (10, 224, 224, 3) and frames.dtype == np.uint8
    assert audio.shape == (160000,) and audio.dtype == np.float32
    # The frame of segment i comes from second i (brightness 20 i + 10, within codec error).
    assert np.allclose(frames.reshape(10, -1).mean(1), 20 * np.arange(10) + 10, atol=4)
    # Downmixed, resampled 1 kHz tone at amplitude 0.5 (AAC priming may delay the start a little).
    assert 0.3 < np.abs(audio[16000:144000]).max() < 0.7
    spectrum = np.abs(np.fft.rfft(audio[32000:48000]))
    assert abs(int(np.argmax(spectrum)) - 1000) <= 2  # 1 Hz bins over one second
    if seconds < 10:
        assert np.abs(audio[155000:]).max() < 1e-3  # the missing tail is silence, not garbage


def test_fbank_shape_padding_and_pitch_order() -> None:
    sr = 16000
    t = np.arange(sr) / sr
    audio = np.concatenate([0.5 * np.sin(2 * np.pi * f * t) for f in np.geomspace(200, 6000, 10)]).astype(np.float32)
    fb = fbank_segments(audio, 10, sr)
    assert fb.shape == (10, 128, 102) and fb.dtype == np.float16
    assert np.all(fb[:, :, 98:] == 0)  # 98 real frames per second, zero-padded to 102 as LAVisH does
    peaks = fb[:, :, :98].astype(np.float32).mean(2).argmax(1)
    assert np.all(np.diff(peaks) > 0), peaks  # higher tone -> higher mel bin, across the whole range
    assert np.isfinite(fb.astype(np.float32)).all()


def test_broken_inputs_are_decode_errors_with_reasons(tmp_path: Path) -> None:
    good = _clip(tmp_path / "good.mp4", 10, SynthSpec(), 64, 64)
    data = good.read_bytes()
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "garbage.mp4").write_bytes(b"\x00not a video at all" * 500)
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) * 2 // 5])
    _clip(tmp_path / "silent.mp4", 10, SynthSpec(), 64, 64, audio=False)
    _clip(tmp_path / "short.mp4", 3, SynthSpec(), 64, 64)
    reasons = {}
    for name in ("missing", "empty", "garbage", "truncated", "silent", "short"):
        with pytest.raises(DecodeError) as e:
            decode_clip(tmp_path / f"{name}.mp4")
        reasons[name] = str(e.value)
    assert reasons["missing"] == "missing file" and reasons["empty"] == "empty file"
    assert reasons["garbage"].startswith("undecodable") and reasons["truncated"].startswith("undecodable")
    assert reasons["silent"].startswith("no audio stream") and reasons["short"].startswith("too short")
    frames, audio = decode_clip(tmp_path / "silent.mp4", no_audio="silence")
    assert frames.shape == (10, 224, 224, 3) and not audio.any()


def test_audio_windows_exact_and_lavish_linspace(tmp_path: Path) -> None:
    """'linspace' takes LAVisH's one-second windows, starting at np.linspace(0, len - 1.1 s, 10) over the
    whole track (here a 12 s ramp: the starts worked out by hand); 'exact' takes seconds 0..9."""
    from avpea_dist.data.build import BuildOptions, encode_video, preprocessing
    from avpea_dist.data.features import audio_windows

    ramp = np.arange(12 * 16000, dtype=np.float32)
    lin = audio_windows(ramp, 10, 16000, "linspace").reshape(10, 16000)
    assert lin[:, 0].tolist() == [0, 19377, 38755, 58133, 77511, 96888, 116266, 135644, 155022, 174400]
    assert (np.diff(lin, axis=1) == 1).all()  # contiguous seconds
    assert (audio_windows(ramp, 10, 16000, "exact") == ramp[:160000]).all()
    short = audio_windows(ramp[:8000], 10, 16000, "linspace").reshape(10, 16000)
    assert (short[:, :8000] == ramp[:8000]).all() and not short[:, 8000:].any()
    assert (audio_windows(ramp[:9 * 16000], 10, 16000, "exact")[9 * 16000:] == 0).all()
    # Through the build's worker on a real 12 s clip: same frames, audio from other windows.
    path = _clip(tmp_path / "long.mp4", 12.0, SynthSpec(fps=4), 64, 64)
    _, whole = decode_clip(path, whole_audio=True)
    assert abs(len(whole) - 12 * 16000) < 2048
    (s1, exact), (s2, linspace) = (encode_video(str(path), BuildOptions(audio_windows=w))
                                   for w in ("exact", "linspace"))
    assert s1 == s2 == "ok" and exact["f5.jpg"] == linspace["f5.jpg"] and exact["fbank.npy"] != linspace["fbank.npy"]
    assert preprocessing(BuildOptions(audio_windows="linspace"))["audio_windows"] == "linspace"


@pytest.mark.parametrize("seconds", [60.0, 3.0])
def test_even_sampling_any_length(tmp_path: Path, seconds: float) -> None:
    """'even': segment i centred at (i + 0.5) * duration / 10, the frame nearest that centre, the audio the
    second around it shifted inside the clip; a 3 s clip still gives 10 (overlapping) segments."""
    from avpea_dist.data.features import window_starts

    from .media import amplitude_at, brightness_at, timed_mp4

    path = timed_mp4(tmp_path / "c.mp4", seconds, fps=4)
    frames, audio = decode_clip(path, size=32, sampling="even", min_seconds=1.0)
    assert frames.shape == (10, 32, 32, 3) and audio.shape == (160000,)
    centres = (np.arange(10) + 0.5) * seconds / 10
    nearest = np.round(centres * 4) / 4  # the 4 fps frame nearest each centre
    assert np.allclose(np.median(frames.reshape(10, -1), 1), brightness_at(nearest, seconds), atol=3)
    starts = window_starts(centres, seconds)
    assert starts.min() >= 0 and starts.max() <= seconds - 1 and np.allclose(np.diff(starts) >= 0, True)
    if seconds == 60.0:
        assert np.allclose(starts, centres - 0.5)  # far from the ends: centred exactly
    else:
        assert starts[0] == 0 and starts[-1] == 2.0  # clamped at both ends of the 3 s clip
    # The tone's amplitude in each window is the clip's amplitude around the window's middle.
    rms = np.sqrt((audio.reshape(10, 16000)[:, 2000:14000] ** 2).mean(1)) * np.sqrt(2)
    assert np.allclose(rms, amplitude_at(starts + 0.5, seconds), atol=0.04), rms
    if seconds >= 10:  # 'first' on the same clip: seconds 0..9
        first, _ = decode_clip(path, size=32, min_seconds=1.0)
        assert np.allclose(np.median(first.reshape(10, -1), 1), brightness_at(np.arange(10) + 0.5, seconds), atol=3)


def test_even_sampling_seeks_to_keyframes_with_the_same_frames(tmp_path: Path) -> None:
    """With keyframes close together 'even' decodes only from the keyframe before each centre: the same
    frames as decoding straight through; with one keyframe in 60 s it decodes straight through."""
    import av

    from avpea_dist.data import decode

    from .media import timed_mp4

    centres = (np.arange(10) + 0.5) * 6.0
    for gop, seeks in ((8, True), (240, False)):
        path = timed_mp4(tmp_path / f"g{gop}.mp4", 60.0, fps=4, gop=gop)
        index = decode._packet_index(path)
        spans = decode._seek_spans(index, centres)
        assert (spans is not None) == seeks and len(index.keyframes) == 240 // gop
        with av.open(str(path)) as container:
            straight, last = decode._frames(container, centres, 32)
        frames, _ = decode_clip(path, size=32, sampling="even", min_seconds=1.0, no_audio="silence")
        assert np.array_equal(frames, straight) and last >= centres[-1]
        if seeks:
            assert len(spans) == 10 and sum(end - start for _, start, end in spans) < 0.5 * 60


def test_even_sampling_seeks_to_audio_windows(tmp_path: Path) -> None:
    """On a 60 s clip 'even' decodes the audio only around its ten windows: the same samples as decoding
    straight through at 16 kHz; from 44.1 kHz the resampler's grid shifts by under a sample (fbank ~same)."""
    from avpea_dist.data import decode
    from avpea_dist.data.features import centred_windows, fbank_segments, window_starts

    from .media import timed_mp4

    starts = window_starts((np.arange(10) + 0.5) * 6.0, 60.0)
    for rate in (16000, 44100):
        path = timed_mp4(tmp_path / f"a{rate}.mp4", 60.0, fps=1, sample_rate=rate)
        straight = centred_windows(decode._audio(path, int(round((starts[-1] + 1) * 16000)), 16000), starts, 16000)
        seeked = decode._centred_audio(path, starts, 16000)
        assert seeked.shape == straight.shape == (160000,)
        if rate == 16000:
            assert np.array_equal(seeked, straight)
        else:
            diff = np.abs(fbank_segments(seeked, 10).astype(np.float32)
                          - fbank_segments(straight, 10).astype(np.float32))
            assert diff.mean() < 0.02 and np.abs(seeked - straight).max() < 0.15  # a 1 kHz tone, amplitude <= 0.5


@pytest.mark.parametrize("degrees, hflip", [(90, False), (-90, False), (180, False), (0, True), (90, True),
                                            (-90, True)])
def test_rotated_phone_video_comes_out_upright(tmp_path: Path, degrees: int, hflip: bool) -> None:
    """A clip stored sideways (or mirrored) with a display matrix decodes as a player shows it, for the
    builders ('first' and 'even' sampling) alike; the stored picture itself is not upright."""
    import av

    from .media import QUADRANTS, quadrant_levels, rotated_mp4

    path = rotated_mp4(tmp_path / "phone.mp4", degrees, hflip)
    with av.open(str(path)) as c:  # what a decoder hands over unturned differs from the upright picture
        stored = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert not np.allclose(quadrant_levels(stored), QUADRANTS, atol=8)
    for sampling in ("first", "even"):
        frames, _ = decode_clip(path, segments=3, size=32, no_audio="silence", min_seconds=0, sampling=sampling)
        for frame in frames:
            assert np.allclose(quadrant_levels(frame), QUADRANTS, atol=8), (sampling, quadrant_levels(frame))


def test_display_matrix_of_other_angles_is_a_reason() -> None:
    """Quarter turns (either sign convention of the angle stays FFmpeg's: the layout PyAV writes for a
    counter-clockwise turn) are applied; a 30 degree tilt is one DecodeError naming the angle and the fix."""
    from avpea_dist.data.decode import upright

    def ccw(deg: float) -> np.ndarray:
        c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
        return np.round(np.array([c, -s, 0, s, c, 0, 0, 0, 0]) * 65536).astype(np.int32)

    picture = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    assert np.array_equal(upright(picture, ccw(0)), picture)
    for quarter in (1, 2, 3):
        assert np.array_equal(upright(picture, ccw(90 * quarter)), np.rot90(picture, quarter))
    with pytest.raises(DecodeError, match="display matrix turns it by 30 degrees clockwise.*ffmpeg -i IN"):
        upright(picture, ccw(-30))
