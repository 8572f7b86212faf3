"""``BuildOptions``: how every shard builder decodes and cuts (workers, shard size, frames, audio, sampling)."""

from __future__ import annotations

from dataclasses import dataclass

AUDIO_WINDOWS = ("exact", "linspace")
SAMPLINGS = ("first", "even")
"""Segment samplings (see data/decode.py): 'first' = second i of the clip, 'even' = spread over the video."""


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
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"--sampling={self.sampling!r} must be one of {', '.join(SAMPLINGS)}")
        if self.sampling == "even" and self.audio_windows != "exact":
            raise ValueError("--sampling even takes each segment's audio around its centre: "
                             "leave --audio-windows at 'exact'")
