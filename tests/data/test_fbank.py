"""data/fbank.py replaced torchaudio's Kaldi fbank: it must give the same numbers, for the shard builder's
one setting, on waveforms of the kinds the builder sees (noise, a tone cut by silence, all zeros, odd lengths)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avpea_dist.data.fbank import fbank
from avpea_dist.data.features import fbank_segments
from avpea_dist.data.manifest import FBANK_FRAMES, MEL_BINS


def _waves() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    t = torch.arange(16000) / 16000
    tone = 0.3 * torch.sin(2 * math.pi * 1000 * t)
    tone[9000:] = 0
    return {"noise": 0.1 * torch.randn(16000, generator=g), "tone then silence": tone,
            "silence": torch.zeros(16000), "odd length": 0.2 * torch.randn(16000 * 2 + 77, generator=g),
            "one frame": torch.randn(400, generator=g)}


@pytest.mark.parametrize("name", list(_waves()))
def test_equals_torchaudio_kaldi_fbank(name):
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi", reason="torchaudio is not installed (nor needed)")
    wave = _waves()[name].unsqueeze(0)
    wave = wave - wave.mean()  # as features.fbank_segments passes it
    ref = kaldi.fbank(wave, htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
                      num_mel_bins=128, dither=0.0, frame_shift=10, frame_length=25)
    ours = fbank(wave, 16000, 128)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)


def test_frames_and_values_without_torchaudio():
    """What holds with or without torchaudio: Kaldi's frame count, the log floor on silence, a tone's energy
    in the mel bins around its frequency, and the builder's padded float16 layout."""
    waves = _waves()
    assert fbank(waves["noise"], 16000, 128).shape == (98, 128)  # 1 + (16000 - 400) // 160
    assert fbank(waves["odd length"], 16000, 128).shape == (1 + (32077 - 400) // 160, 128)
    assert fbank(torch.zeros(399), 16000, 128).shape == (0, 128)
    floor = math.log(torch.finfo(torch.float32).eps)
    assert torch.allclose(fbank(waves["silence"], 16000, 128), torch.full((98, 128), floor))
    tone = fbank(waves["tone then silence"], 16000, 128)
    # 1000 Hz is mel 1000: the centre of filter k is mel(20 Hz) + (k + 1) * (mel(8 kHz) - mel(20 Hz)) / 129, k ~ 43.5
    assert set(tone[:50].argmax(dim=1).tolist()) <= {43, 44}
    assert (tone[60:] == floor).all()  # the silent part, after the last frame that overlaps the tone
    out = fbank_segments(np.concatenate([waves["noise"].numpy(), waves["silence"].numpy()]), 2)
    assert out.shape == (2, MEL_BINS, FBANK_FRAMES) and out.dtype == np.float16
    assert (out[0, :, 98:] == 0).all() and np.isfinite(out).all()
