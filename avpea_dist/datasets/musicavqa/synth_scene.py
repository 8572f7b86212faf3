"""Scenes of the embedded AVQA set: who is seen where, who is heard when and how loud; and their rendering.

A scene has one to three visible instruments at the left / middle / right of the picture and up to one
instrument heard off screen. Each instrument kind has its own look (a colour and a pattern drawn in its third
of the frame) and its own sound (a pitch, spread over the mel range, and a timbre). A sounding instrument has
an onset and an end (whole seconds: the shard builder's ten segments of a 10 s video are those seconds) and a
loudness level; onsets and levels are distinct within a scene so that "first", "louder" and "loudest" always
have one answer. Visible instruments may stay silent and off-screen sounds have no picture: those are the
distractors that make the audio-visual questions need both streams.

The picture is static over the clip (only its noise changes): who is playing is told by the sound alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...data.synthmedia import COLOURS, background, paint, tone

SECONDS = 10
SLOTS = ("left", "middle", "right")
# (answer word, colour, pattern): colour and pattern each tell the kind (two cues for a random-init ViT);
# the names are MUSIC-AVQA's, spelt as its answers are.
INSTRUMENTS: tuple[tuple[str, str, str], ...] = (
    ("accordion", "red", "solid"), ("acoustic_guitar", "green", "bars"), ("cello", "blue", "checker"),
    ("flute", "yellow", "columns"), ("piano", "white", "square"), ("trumpet", "cyan", "circle"),
    ("violin", "magenta", "frame"), ("xylophone", "orange", "cross"),
)
NAMES = tuple(i[0] for i in INSTRUMENTS)
# With fewer kinds (``instruments`` < 8) the first ones of this order are used: their pitches stay far apart.
SPREAD_ORDER = (0, 4, 2, 6, 1, 5, 3, 7)
MIN_INSTRUMENTS = 4  # three seen and one heard off screen, all different
LEVEL_GAINS = (0.04, 0.1, 0.25, 0.6)  # ~8 dB apart: quiet .. loud, mixed to peak below 1
NOISE = 0.001  # a floor well under the quietest level (-32 dB)


@dataclass(frozen=True)
class Sound:
    onset: int  # first second it sounds
    end: int  # it sounds over the seconds [onset, end)
    level: int  # index into LEVEL_GAINS; distinct within a scene

    @property
    def duration(self) -> int:
        return self.end - self.onset

    @property
    def always(self) -> bool:
        return self.onset == 0 and self.end == SECONDS


@dataclass(frozen=True)
class Player:
    instrument: int  # index into INSTRUMENTS
    slot: int | None  # index into SLOTS; None = heard off screen
    sound: Sound | None  # None = seen but silent

    @property
    def name(self) -> str:
        return NAMES[self.instrument]


@dataclass(frozen=True)
class Scene:
    video_id: str
    players: tuple[Player, ...]

    @property
    def visible(self) -> list[Player]:
        """Seen instruments, left to right."""
        return sorted((p for p in self.players if p.slot is not None), key=lambda p: p.slot)

    @property
    def sounding(self) -> list[Player]:
        """Heard instruments (on or off screen), by onset."""
        return sorted((p for p in self.players if p.sound is not None), key=lambda p: p.sound.onset)

    def at(self, slot: int) -> Player | None:
        return next((p for p in self.players if p.slot == slot), None)

    def to_json(self) -> dict[str, Any]:
        return {"video_id": self.video_id, "players": [
            {"instrument": p.name, "slot": None if p.slot is None else SLOTS[p.slot],
             "sound": None if p.sound is None else {"onset": p.sound.onset, "end": p.sound.end,
                                                   "level": p.sound.level}} for p in self.players]}

    @staticmethod
    def from_json(d: dict[str, Any]) -> "Scene":
        return Scene(d["video_id"], tuple(
            Player(NAMES.index(p["instrument"]), None if p["slot"] is None else SLOTS.index(p["slot"]),
                   None if p["sound"] is None else Sound(**p["sound"])) for p in d["players"]))


def instrument_pool(instruments: int = len(INSTRUMENTS)) -> tuple[int, ...]:
    """The instrument kinds a set uses (indices into INSTRUMENTS, sorted)."""
    if not MIN_INSTRUMENTS <= instruments <= len(INSTRUMENTS):
        raise ValueError(f"--instruments={instruments} must lie in [{MIN_INSTRUMENTS}, {len(INSTRUMENTS)}]")
    return tuple(sorted(SPREAD_ORDER[:instruments]))


def draw_scene(video_id: str, rng: np.random.Generator,
               pool: tuple[int, ...] = tuple(range(len(INSTRUMENTS)))) -> Scene:
    """One random scene of kinds from ``pool``: 1-3 visible instruments (35% silent each), an off-screen sound
    in 35% of scenes."""
    n_visible = int(rng.choice([1, 2, 3], p=[0.2, 0.35, 0.45]))
    slots = sorted(int(s) for s in rng.choice(3, n_visible, replace=False))
    off_screen = bool(rng.random() < 0.35)
    kinds = [pool[int(i)] for i in rng.choice(len(pool), n_visible + off_screen, replace=False)]
    heard = [bool(rng.random() < 0.65) for _ in range(n_visible)] + [True] * off_screen
    if not any(heard):
        heard[int(rng.integers(n_visible))] = True
    n_heard = sum(heard)
    onsets = sorted(int(o) for o in rng.choice(6, n_heard, replace=False))
    if rng.random() < 0.5:
        onsets[0] = 0  # often someone plays from the start: "always playing" needs it
    order = rng.permutation(n_heard)  # which heard player gets which onset
    levels = rng.choice(len(LEVEL_GAINS), n_heard, replace=False)
    players, h = [], 0
    for i, kind in enumerate(kinds):
        sound = None
        if heard[i]:
            onset = onsets[int(order[h])]
            end = SECONDS if rng.random() < 0.6 else int(rng.integers(onset + 3, SECONDS))
            sound = Sound(onset, end, int(levels[h]))
            h += 1
        players.append(Player(kind, slots[i] if i < n_visible else None, sound))
    return Scene(video_id, tuple(players))


def _wave(instrument: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """SECONDS of the instrument's tone at peak ~1: odd kinds a fifth (1, 1.5), even ones harmonics (1, 2, 3)."""
    import numpy as np  # here, not at the top: `avpea --help` imports this module for its options
    t = np.arange(SECONDS * sr) / sr
    f = tone(instrument, len(INSTRUMENTS))
    partials = ((1.0, 0.6), (1.5, 0.4)) if instrument % 2 else ((1.0, 0.6), (2.0, 0.3), (3.0, 0.1))
    partials = [(m, a) for m, a in partials if f * m < sr / 2]
    return sum(a * np.sin(2 * np.pi * f * m * t + rng.uniform(0, 2 * np.pi)) for m, a in partials)


def render_audio(scene: Scene, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Mono float32, SECONDS long: each heard instrument over its seconds (20 ms ramps), at its level."""
    import numpy as np
    audio = rng.normal(0, NOISE, SECONDS * sr)
    ramp = int(0.02 * sr)
    for p in scene.sounding:
        env = np.zeros(SECONDS * sr)
        a, b = p.sound.onset * sr, p.sound.end * sr
        env[a:b] = 1.0
        env[a:a + ramp] = np.linspace(0, 1, ramp)
        env[b - ramp:b] = np.linspace(1, 0, ramp)
        audio += LEVEL_GAINS[p.sound.level] * env * _wave(p.instrument, sr, rng)
    return np.clip(audio, -1, 1).astype(np.float32)


def render_frames(scene: Scene, size: int, fps: int, rng: np.random.Generator) -> np.ndarray:
    """(SECONDS * fps, size, size, 3) uint8: each visible instrument drawn in a box taking most of its third."""
    import numpy as np
    base = background(size, rng).copy()
    third = size / 3
    for p in scene.visible:
        name, colour, layout = INSTRUMENTS[p.instrument]
        shade = np.array(COLOURS[colour], np.float32) * rng.uniform(0.85, 1.0)
        top = int(size * rng.uniform(0.08, 0.18))
        bottom = int(size * rng.uniform(0.82, 0.92))
        left = int(p.slot * third + size * 0.02)
        right = int((p.slot + 1) * third - size * 0.02)
        paint(base, (top, bottom, left, right), tuple(shade), layout)
    frames = []
    for _ in range(SECONDS * fps):
        noisy = base + rng.normal(0, 4, (size, size, 1)).astype(np.float32)
        frames.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return np.stack(frames)
