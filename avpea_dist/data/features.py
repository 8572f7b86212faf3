"""Per-segment features as LAVisH computes them, and the compact forms they are stored in.

Audio: Kaldi fbank (Hanning window, 25 ms, 10 ms shift, 128 mel bins) per one-second segment of the
mean-removed waveform, zero-padded from 98 to 102 frames, stored (segments, 128, 102) float16 (log-mel values
lie within about [-16, 10]; float16 keeps ~3 significant digits, far below the fbank's own noise).
Frames: JPEG at quality 90 (a 224x224 frame is ~10-25 kB instead of 150 kB raw).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from .manifest import FBANK_FRAMES, MEL_BINS

AUDIO_MEAN = -4.1426  # LAVisH/AST AudioSet statistics: x -> (x - mean) / (2 * std)
AUDIO_STD = 3.2001


def fbank_segments(audio: np.ndarray, segments: int, sample_rate: int = 16000) -> np.ndarray:
    """mono float32 (segments * sample_rate,) -> float16 (segments, MEL_BINS, FBANK_FRAMES)."""
    import torch  # build workers only

    from .fbank import fbank

    wave = torch.from_numpy(np.ascontiguousarray(audio, np.float32)).view(segments, sample_rate)
    out = np.empty((segments, MEL_BINS, FBANK_FRAMES), np.float16)
    for i in range(segments):
        seg = wave[i:i + 1] - wave[i].mean()
        fb = fbank(seg, sample_rate, MEL_BINS)  # Kaldi's, as torchaudio.compliance.kaldi computed it
        fb = torch.nn.functional.pad(fb[:FBANK_FRAMES], (0, 0, 0, FBANK_FRAMES - min(len(fb), FBANK_FRAMES)))
        out[i] = fb.T.numpy()  # (mel, time): the model reads the mel axis as the image height
    return out


def normalise_fbank(fbank: np.ndarray) -> np.ndarray:
    """Stored float16 log-mel -> float32 model input, (x - mean) / (2 std) as LAVisH."""
    out = fbank.astype(np.float32)
    out -= AUDIO_MEAN
    out *= 1.0 / (2 * AUDIO_STD)
    return out


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def jpeg_bytes(frame: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def audio_windows(audio: np.ndarray, segments: int, sample_rate: int, mode: str = "exact") -> np.ndarray:
    """A mono track -> the (segments * sample_rate,) samples the segments' fbanks are computed from.

    'exact': second i of the clip (the track cut or padded to ``segments`` seconds). 'linspace': LAVisH's
    AVE loader: one second from each of ``np.linspace(0, len - 1.1 s, segments, dtype=int)``, spread over
    the whole track; a track of at most 1.1 s gives its start (padded) to every segment.
    """
    n, sr = segments * sample_rate, sample_rate
    if mode == "exact":
        return np.pad(audio[:n], (0, max(0, n - len(audio))))
    if mode != "linspace":
        raise ValueError(f"audio windows {mode!r}: choose 'exact' or 'linspace'")
    if len(audio) > sr * 1.1:
        starts = np.linspace(0, len(audio) - sr * 1.1, num=segments, dtype=int)
    else:
        starts = np.zeros(segments, dtype=int)
    first = np.pad(audio[:sr], (0, max(0, sr - len(audio))))
    return np.concatenate([audio[s:s + sr] if s + sr <= len(audio) else first for s in starts])


def window_starts(centres: np.ndarray, duration: float) -> np.ndarray:
    """'even' sampling: the start (s) of each segment's one-second audio window, centred on its segment's
    centre and shifted to lie inside [0, duration] (all at 0 for a clip of at most one second)."""
    return np.clip(np.asarray(centres, np.float64) - 0.5, 0.0, max(0.0, duration - 1.0))


def centred_windows(audio: np.ndarray, starts: np.ndarray, sample_rate: int) -> np.ndarray:
    """One second of ``audio`` from each of ``starts`` (s), concatenated: (len(starts) * sample_rate,). A window
    running past the end of the track ends in silence."""
    out = np.zeros((len(starts), sample_rate), np.float32)
    for i, s in enumerate(np.round(np.asarray(starts) * sample_rate).astype(int)):
        piece = audio[s:s + sample_rate]
        out[i, :len(piece)] = piece
    return out.reshape(-1)
