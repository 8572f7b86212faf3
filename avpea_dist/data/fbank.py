"""Kaldi's log-mel filterbank (``compute-fbank-feats``) for the one setting LAVisH uses, in plain torch.

This was ``torchaudio.compliance.kaldi.fbank(wave, htk_compat=True, use_energy=False, window_type='hanning',
num_mel_bins=128, dither=0.0, frame_shift=10, frame_length=25)``. torchaudio was a dependency for this one
call, and it has no release for torch 2.12 or later; the same arithmetic, step for step, is ~40 lines.
Kaldi's other defaults are kept: DC offset removed per frame, pre-emphasis 0.97, the frame zero-padded to a
power of two, power spectrum, triangular mel filters from 20 Hz to Nyquist on the mel scale
``1127 ln(1 + f/700)``, log floored at float32 epsilon, ``snip_edges`` (only whole frames). With
``use_energy=False`` ``htk_compat`` changes nothing. tests/data/test_fbank.py checks equality with torchaudio
wherever torchaudio is installed.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

PREEMPHASIS = 0.97
LOW_FREQ = 20.0


def _mel(freq: torch.Tensor | float) -> torch.Tensor | float:
    if isinstance(freq, torch.Tensor):
        return 1127.0 * (1.0 + freq / 700.0).log()
    return 1127.0 * math.log(1.0 + freq / 700.0)


@lru_cache(maxsize=8)
def mel_banks(num_bins: int, padded: int, sample_rate: int) -> torch.Tensor:
    """(num_bins, padded // 2 + 1) triangular filters over the rfft bins (the Nyquist bin gets weight 0, as in
    Kaldi, whose filters cover the first padded/2 bins only)."""
    low, high = _mel(LOW_FREQ), _mel(0.5 * sample_rate)
    delta = (high - low) / (num_bins + 1)
    k = torch.arange(num_bins, dtype=torch.float32).unsqueeze(1)
    left, centre, right = low + k * delta, low + (k + 1.0) * delta, low + (k + 2.0) * delta
    mel = _mel(sample_rate / padded * torch.arange(padded // 2, dtype=torch.float32)).unsqueeze(0)
    up, down = (mel - left) / (centre - left), (right - mel) / (right - centre)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.nn.functional.pad(banks, (0, 1))


def fbank(wave: torch.Tensor, sample_rate: int, num_mel_bins: int, frame_length_ms: float = 25.0,
          frame_shift_ms: float = 10.0) -> torch.Tensor:
    """(1, samples) or (samples,) float32 waveform -> (frames, num_mel_bins) log-mel energies; frames =
    1 + (samples - window) // shift (no partial frame), an empty (0, bins) tensor when shorter than a window."""
    wave = wave.reshape(-1).to(torch.float32)
    window = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    padded = 1 << (window - 1).bit_length()
    if wave.numel() < window:
        return torch.empty(0, num_mel_bins)
    frames = wave.unfold(0, window, shift)  # (frames, window): only whole frames (Kaldi's snip_edges)
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)  # x[t-1], the first sample repeated
    frames = frames - PREEMPHASIS * previous
    frames = frames * torch.hann_window(window, periodic=False, dtype=torch.float32)
    power = torch.fft.rfft(frames, n=padded).abs().pow(2.0)  # n=padded zero-pads on the right
    energies = power @ mel_banks(num_mel_bins, padded, sample_rate).T
    return torch.clamp(energies, min=torch.finfo(torch.float32).eps).log()
