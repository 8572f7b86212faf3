"""The questions of the embedded AVQA set: MUSIC-AVQA-style templates of the nine kinds, answered from a scene.

Each kind lists the questions a scene supports as ``Candidate``s (template, its values, the answer). The
templates follow the release's wording and placeholders (``<Object>``, ``<LR>``, ``<LRer>``, ``<LL>``,
``<TH>``, ``<FL>``, ``<BA>``); several are the release's own. What each kind needs:

- Audio Counting / Comparative: the sound only (which tones are heard, their loudness and duration); the
  named instruments are heard, seen or neither, so the picture does not help.
- Visual Counting / Location: the picture only (which patterns are where; silent instruments count).
- Audio-Visual: both. "In the video" means seen; "sounding" means heard. A silent visible instrument and an
  off-screen sound make each one-stream answer a guess: e.g. "Where is the loudest instrument?" needs the
  loudest tone (sound), its instrument (the tone-look pairing learnt from training) and its place (picture).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .synth_scene import NAMES, SLOTS, Player, Scene

NUMBERS = ("zero", "one", "two", "three", "four")


@dataclass(frozen=True)
class Candidate:
    type: tuple[str, str]  # (scenario, kind)
    template: str
    values: tuple[str, ...]
    answer: str


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _pairs(players: list[Player]) -> list[tuple[Player, Player]]:
    return [(a, b) for a in players for b in players if a is not b]


def audio_counting(s: Scene, absent: list[int]) -> list[Candidate]:
    t, heard = ("Audio", "Counting"), {p.instrument for p in s.sounding}
    named = sorted({p.instrument for p in s.players} | set(absent[:2]))
    out = [Candidate(t, "How many musical instruments were heard throughout the video?", (),
                     NUMBERS[len(heard)]),
           Candidate(t, "How many instruments can be heard in the video?", (), NUMBERS[len(heard)])]
    out += [Candidate(t, "Is there a <Object> sound?", (NAMES[k],), _yes(k in heard)) for k in named]
    out += [Candidate(t, "Are there <Object> and <Object> sound? ", (NAMES[a], NAMES[b]),
                      _yes(a in heard and b in heard))
            for a in named for b in named if a < b]
    return out


def audio_comparative(s: Scene, absent: list[int]) -> list[Candidate]:
    t, out = ("Audio", "Comparative"), []
    for a, b in _pairs(s.sounding):
        names = (a.name, b.name)
        louder = a.sound.level > b.sound.level
        out.append(Candidate(t, "Is the <Object> louder than the <Object>?", names, _yes(louder)))
        out.append(Candidate(t, "Is the <Object> quieter than the <Object>?", names, _yes(not louder)))
        if a.sound.duration != b.sound.duration:
            out.append(Candidate(t, "Is the <Object> playing longer than the <Object>?", names,
                                 _yes(a.sound.duration > b.sound.duration)))
    return out


def visual_counting(s: Scene, absent: list[int]) -> list[Candidate]:
    t, seen = ("Visual", "Counting"), {p.instrument for p in s.visible}
    named = sorted({p.instrument for p in s.players} | set(absent[:2]))
    out = [Candidate(t, "How many types of musical instruments appeared in the entire video?", (), NUMBERS[len(seen)]),
           Candidate(t, "How many instruments are in the video?", (), NUMBERS[len(seen)])]
    out += [Candidate(t, "Is there a <Object> in the entire video?", (NAMES[k],), _yes(k in seen)) for k in named]
    out += [Candidate(t, "Are there <Object> and <Object> instruments in the video?", (NAMES[a], NAMES[b]),
                      _yes(a in seen and b in seen)) for a in named for b in named if a < b]
    return out


def visual_location(s: Scene, absent: list[int]) -> list[Candidate]:
    t, seen = ("Visual", "Location"), s.visible
    out = [Candidate(t, "Where is the <Object>?", (p.name,), SLOTS[p.slot]) for p in seen]
    out += [Candidate(t, "What is the instrument on the <LR> of the video?", (SLOTS[p.slot],), p.name) for p in seen]
    if len(seen) == 1:
        out.append(Candidate(t, "What kind of musical instrument is it?", (), seen[0].name))
    else:
        out.append(Candidate(t, "What kind of instrument is the <LRer> instrument? ", ("leftest",), seen[0].name))
        out.append(Candidate(t, "What kind of instrument is the <LRer> instrument? ", ("rightest",), seen[-1].name))
        for i, p in enumerate(seen):
            if i > 0:
                out.append(Candidate(t, "What is the instrument on the <LR> of <Object>?", ("left", p.name),
                                     seen[i - 1].name))
            if i + 1 < len(seen):
                out.append(Candidate(t, "What is the instrument on the <LR> of <Object>?", ("right", p.name),
                                     seen[i + 1].name))
    return out


def av_existential(s: Scene, absent: list[int]) -> list[Candidate]:
    t, out = ("Audio-Visual", "Existential"), []
    off_screen = any(p.slot is None for p in s.players)
    out.append(Candidate(t, "Is this sound from the instrument in the video?", (), _yes(not off_screen)))
    out += [Candidate(t, "Is the instrument on the <LR> playing?", (SLOTS[p.slot],), _yes(p.sound is not None))
            for p in s.visible]
    for p in s.players:  # off-screen players are asked about too: they are not "in the video"
        seen = p.slot is not None
        out.append(Candidate(t, "Is the <Object> in the video always playing?", (p.name,),
                             _yes(seen and p.sound is not None and p.sound.always)))
        out.append(Candidate(t, "Is the <Object> in the video playing?", (p.name,), _yes(seen and p.sound is not None)))
    return out


def av_counting(s: Scene, absent: list[int]) -> list[Candidate]:
    t = ("Audio-Visual", "Counting")
    seen_heard = [p for p in s.visible if p.sound is not None]
    out = [Candidate(t, "How many instruments are sounding in the video?", (), NUMBERS[len(seen_heard)]),
           Candidate(t, "How many instruments in the video did not sound from beginning to end?", (),
                     NUMBERS[sum(p.sound is None for p in s.visible)])]
    by_level = sorted(seen_heard, key=lambda p: p.sound.level)  # "the loudest instrument": of those seen
    for ll, p in (by_level[-1:] and [("loudest", by_level[-1]), ("quietest", by_level[0])]) or []:
        for lr in ("left", "right"):
            n = sum((q.slot < p.slot) == (lr == "left") and q is not p for q in s.visible)
            out.append(Candidate(t, "How many instruments are on the <LR> of the <LL> instrument?", (lr, ll),
                                 NUMBERS[n]))
    out += [Candidate(t, "How many sounding <Object> in the video\uff1f", (p.name,),
                      NUMBERS[int(p.slot is not None and p.sound is not None)]) for p in s.players]
    return out


def av_location(s: Scene, absent: list[int]) -> list[Candidate]:
    t, out = ("Audio-Visual", "Location"), []
    seen_heard = sorted((p for p in s.visible if p.sound is not None), key=lambda p: p.sound.level)
    if seen_heard:
        out.append(Candidate(t, "Where is the <LL> instrument?", ("loudest",), SLOTS[seen_heard[-1].slot]))
        out.append(Candidate(t, "Where is the <LL> instrument?", ("quietest",), SLOTS[seen_heard[0].slot]))
    if len(seen_heard) == 1:
        out.append(Candidate(t, "Where is the sounding instrument?", (), SLOTS[seen_heard[0].slot]))
    heard = s.sounding
    for fl, p in (("first", heard[0]), ("last", heard[-1])):
        if len(heard) < 2 and fl == "last":
            continue
        for q in s.visible:
            out.append(Candidate(t, "Is the <FL> sound coming from the <LR> instrument?", (fl, SLOTS[q.slot]),
                                 _yes(p is q)))
    return out


def av_comparative(s: Scene, absent: list[int]) -> list[Candidate]:
    t, out = ("Audio-Visual", "Comparative"), []
    for a, b in _pairs(s.visible):
        la, lb = SLOTS[a.slot], SLOTS[b.slot]
        if a.sound is not None and b.sound is not None:
            out.append(Candidate(t, "Is the instrument on the <LR> louder than the instrument on the <LR>?", (la, lb),
                                 _yes(a.sound.level > b.sound.level)))
        da, db = (0 if p.sound is None else p.sound.duration for p in (a, b))
        if da != db:
            out.append(Candidate(t, "Is the instrument on the <LR> playing longer than the instrument on the <LR>?",
                                 (la, lb), _yes(da > db)))
    return out


def av_temporal(s: Scene, absent: list[int]) -> list[Candidate]:
    t, out, heard = ("Audio-Visual", "Temporal"), [], s.sounding
    for fl, p in (("first", heard[0]), ("last", heard[-1])):
        if p.slot is not None and (fl == "first" or len(heard) > 1):
            out.append(Candidate(t, "Where is the <FL> sounding instrument?", (fl,), SLOTS[p.slot]))
    for i, th in enumerate(("first", "second", "third")[:len(heard)]):
        if heard[i].slot is not None:
            out.append(Candidate(t, "Where is the <TH> instrument that comes in?", (th,), SLOTS[heard[i].slot]))
    for a, b in _pairs([p for p in s.visible if p.sound is not None]):
        for ba, earlier in (("before", True), ("after", False)):
            out.append(Candidate(t, "Does the instrument on the <LR> start playing <BA> the instrument on the <LR>?",
                                 (SLOTS[a.slot], ba, SLOTS[b.slot]), _yes((a.sound.onset < b.sound.onset) == earlier)))
    return out


KINDS: tuple[Callable[[Scene, list[int]], list[Candidate]], ...] = (
    audio_counting, audio_comparative, visual_counting, visual_location,
    av_existential, av_counting, av_location, av_comparative, av_temporal)
