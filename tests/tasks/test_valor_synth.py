"""`shards synth valor`: the VALOR-32K layout, captions that name what clips.json says is seen and heard,
the quads that make one stream insufficient, the planted bad records, determinism, and the mp4 content."""

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from avpea_dist.cli import main
from avpea_dist.data.decode import decode_clip
from avpea_dist.data.synthmedia import COLOURS, SynthSpec
from avpea_dist.datasets.valor.synth import PITCHES, make_clips, make_valor

SPLITS = ("train", "val", "test")
ID = re.compile(r"^[A-Za-z0-9_-]{11}_[0-9]+\.000_[0-9]+\.000$")  # VALOR's form
# The grammar, written out here: every caption must be one of these with the clip's own words.
GRAMMAR = (r"A (?P<colour>\w+) (?P<shape>\w+) on the (?P<side>\w+) while a (?P<pitch>\w+) (?P<sound>\w+) plays\.",
           r"A (?P<pitch>\w+) (?P<sound>\w+) plays while a (?P<colour>\w+) (?P<shape>\w+)"
           r" is shown on the (?P<side>\w+)\.",
           r"On the (?P<side>\w+), a (?P<colour>\w+) (?P<shape>\w+) appears as a (?P<pitch>\w+) (?P<sound>\w+) plays\.")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("valor") / "set"
    assert main(["shards", "synth", "valor", "--out", str(out), "--clips", "24", "--seed", "2", "--size", "64"]) == 0
    return out


def _parse(caption: str) -> dict[str, str]:
    for pattern in GRAMMAR:
        m = re.fullmatch(pattern, caption)
        if m:
            return m.groupdict()
    raise AssertionError(f"caption outside the grammar: {caption!r}")


def test_valor_layout_and_planted_records(small):
    clips = {c["video_id"]: c for c in json.loads((small / "clips.json").read_text())}
    assert {p.stem for p in (small / "videos").glob("*.mp4")} == set(clips)
    for split in SPLITS:
        records = json.loads((small / f"desc_{split}.json").read_text())
        assert all(isinstance(r, dict) and list(r) == ["video_id", "desc"] for r in records)
        assert all(ID.match(r["video_id"]) and clips[r["video_id"]]["split"] == split for r in records)
        assert {r["video_id"] for r in records} == {v for v, c in clips.items() if c["split"] == split}
        empty = [r for r in records if not r["desc"]]
        copies = Counter(json.dumps(r) for r in records)
        if split == "train":  # one empty caption and one exact duplicate, each for a clip with a good caption
            assert len(empty) == 1 and sorted(copies.values())[-2:] == [1, 2]
            assert any(r["desc"] and r["video_id"] == empty[0]["video_id"] for r in records)
        else:
            assert not empty and set(copies.values()) == {1}
        for r in records:
            if r["desc"]:
                assert r["desc"] in clips[r["video_id"]]["captions"]
    assert any(len(c["captions"]) == 2 for c in clips.values())
    assert any("-" in v[:11] for v in clips) and any("_" in v[:11] for v in clips)  # as YouTube ids


def test_captions_name_what_is_seen_and_heard():
    clips = make_clips(240, 0)
    for c in clips:
        for text in c.captions:
            words = _parse(text)
            assert words == {"colour": c.colour, "shape": c.shape, "side": c.side, "pitch": c.pitch,
                             "sound": c.sound}, text
        assert len(set(c.captions)) == len(c.captions)
    assert Counter(c.split for c in clips) == {"train": 148, "val": 32, "test": 60}


def test_each_clip_needs_both_streams_to_be_found():
    """In its split every clip shares its picture with one clip and its sound with another, and no two clips
    share both: a one-stream model's best R@1 is 1/2, a model using both can reach 1."""
    clips = make_clips(240, 0)
    for split in SPLITS:
        mine = [c for c in clips if c.split == split]
        assert len({(c.picture, c.audio) for c in mine}) == len(mine)
        for c in mine:
            assert sum(o.picture == c.picture for o in mine) >= 2
            assert sum(o.audio == c.audio for o in mine) >= 2
    assert len({c.picture for c in clips}) > 25 and len({c.audio for c in clips}) == 9


def test_deterministic_reused_and_checked(tmp_path):
    spec = SynthSpec(size=32, aac_fast=True)
    a = make_valor(tmp_path / "a", clips=12, seed=4, spec=spec)
    make_valor(tmp_path / "b", clips=12, seed=4, spec=spec)
    for name in ("desc_train.json", "desc_val.json", "desc_test.json", "clips.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for mp4 in (tmp_path / "a" / "videos").glob("*.mp4"):
        assert mp4.read_bytes() == (tmp_path / "b" / "videos" / mp4.name).read_bytes()
    assert not a["reused"] and make_valor(tmp_path / "a", clips=12, seed=4, spec=spec)["reused"]
    assert make_clips(12, 5) != make_clips(12, 4)
    with pytest.raises(ValueError, match="multiple of 4"):
        make_clips(30, 0)


def test_mp4_shows_and_sounds_the_clip(small):
    clips = json.loads((small / "clips.json").read_text())
    for c in [next(c for c in clips if c["sound"] == s) for s in ("beeping", "whistle")]:
        frames, audio = decode_clip(small / "videos" / f"{c['video_id']}.mp4", size=64)
        half = {"left": frames[4, :, :32], "right": frames[4, :, 32:]}
        bright = {side: (img.max(-1) > 100).mean() for side, img in half.items()}
        other = "left" if c["side"] == "right" else "right"
        assert bright[c["side"]] > 0.1 and bright[other] < 0.02, (c, bright)
        pixels = half[c["side"]].reshape(-1, 3)
        pixels = pixels[pixels.max(1) > 100].astype(float)
        assert np.abs(pixels.mean(0) - np.array(COLOURS[c["colour"]])).max() < 60
        chunk = audio[16000:32000]
        peak_hz = np.argmax(np.abs(np.fft.rfft(chunk))) * 16000 / len(chunk)
        assert abs(peak_hz - PITCHES[c["pitch"]]) < 10
        quarter = np.sqrt((chunk.reshape(8, -1) ** 2).mean(1))  # 8 slices of 125 ms: beeps every other one
        if c["sound"] == "beeping":
            assert quarter[::2].min() > 5 * quarter[1::2].max() or quarter[1::2].min() > 5 * quarter[::2].max()
        else:
            assert quarter.min() > 0.5 * quarter.max()


def test_builds_into_caption_shards(small, tmp_path):
    """Through the real builder: one sample per clip with all its captions; the planted duplicate and empty
    records are the only skips."""
    from avpea_dist.data.build import BuildOptions
    from avpea_dist.datasets.valor.build import build_valor

    m = build_valor(small, small / "videos", tmp_path / "shards",
                    BuildOptions(workers=1, frame_size=32, sampling="even", min_seconds=1.0), text=False,
                    progress=False)
    clips = json.loads((small / "clips.json").read_text())
    for split in SPLITS:
        s, mine = m["splits"][split], [c for c in clips if c["split"] == split]
        planted = 2 if split == "train" else 0
        assert s["samples"] == len(mine) and s["captions"] == sum(len(c["captions"]) for c in mine)
        assert s["records"] == s["captions"] + planted and len(s["skipped"]) == planted
    reasons = " | ".join(x["reason"] for x in m["splits"]["train"]["skipped"])
    assert "empty" in reasons and "duplicate" in reasons
