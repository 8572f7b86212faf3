"""`shards synth musicavqa`: the release layout (read by tasks/avqa/release.py without a skip), answers
recomputed here from the written scenes.json by an independent answerer, balance, determinism, and the mp4s
showing and sounding what the scenes say."""

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from avpea_dist.cli import main
from avpea_dist.data.decode import decode_clip
from avpea_dist.data.synthmedia import COLOURS, SynthSpec, tone
from avpea_dist.datasets.musicavqa import release
from avpea_dist.datasets.musicavqa.synth_scene import NAMES
from avpea_dist.datasets.musicavqa.synth import make_musicavqa, make_questions, make_scenes, majority_share

NUMBERS = ["zero", "one", "two", "three", "four"]
SLOT_X = {"left": 0, "middle": 1, "right": 2}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("avqa") / "set"
    assert main(["shards", "synth", "musicavqa", "--out", str(out), "--videos", "12", "--questions", "9",
                 "--seed", "3"]) == 0
    return out


def _answer(scene: dict, template: str, v: list[str]) -> tuple[str, str]:
    """(kind, answer) of one question, written from the question's meaning, not from the generator's code:
    "in the video" = seen, "sounding"/"sound"/"heard" = heard."""
    ps = scene["players"]
    heard = sorted((p for p in ps if p["sound"]), key=lambda p: p["sound"]["onset"])
    seen = sorted((p for p in ps if p["slot"]), key=lambda p: SLOT_X[p["slot"]])
    by = {p["instrument"]: p for p in ps}
    at = {p["slot"]: p for p in seen}

    def dur(p):
        return p["sound"]["end"] - p["sound"]["onset"] if p["sound"] else 0

    def level(p):
        return p["sound"]["level"]

    def yn(x):
        return "yes" if x else "no"

    names_heard = {p["instrument"] for p in heard}
    names_seen = {p["instrument"] for p in seen}
    seen_heard = sorted((p for p in seen if p["sound"]), key=level)
    t = {
        "How many musical instruments were heard throughout the video?": ("A/Cnt", lambda: NUMBERS[len(heard)]),
        "How many instruments can be heard in the video?": ("A/Cnt", lambda: NUMBERS[len(heard)]),
        "Is there a <Object> sound?": ("A/Cnt", lambda: yn(v[0] in names_heard)),
        "Are there <Object> and <Object> sound? ": ("A/Cnt", lambda: yn({v[0], v[1]} <= names_heard)),
        "Is the <Object> louder than the <Object>?": ("A/Cmp", lambda: yn(level(by[v[0]]) > level(by[v[1]]))),
        "Is the <Object> quieter than the <Object>?": ("A/Cmp", lambda: yn(level(by[v[0]]) < level(by[v[1]]))),
        "Is the <Object> playing longer than the <Object>?": ("A/Cmp", lambda: yn(dur(by[v[0]]) > dur(by[v[1]]))),
        "How many types of musical instruments appeared in the entire video?": ("V/Cnt", lambda: NUMBERS[len(seen)]),
        "How many instruments are in the video?": ("V/Cnt", lambda: NUMBERS[len(seen)]),
        "Is there a <Object> in the entire video?": ("V/Cnt", lambda: yn(v[0] in names_seen)),
        "Are there <Object> and <Object> instruments in the video?": ("V/Cnt", lambda: yn({v[0], v[1]} <= names_seen)),
        "Where is the <Object>?": ("V/Loc", lambda: by[v[0]]["slot"]),
        "What is the instrument on the <LR> of the video?": ("V/Loc", lambda: at[v[0]]["instrument"]),
        "What kind of musical instrument is it?": ("V/Loc", lambda: seen[0]["instrument"] if len(seen) == 1 else "?"),
        "What kind of instrument is the <LRer> instrument? ": (
            "V/Loc", lambda: seen[0 if v[0] == "leftest" else -1]["instrument"]),
        "What is the instrument on the <LR> of <Object>?": ("V/Loc", lambda: [
            p for p in seen if (SLOT_X[p["slot"]] < SLOT_X[by[v[1]]["slot"]]) == (v[0] == "left")
            and p["instrument"] != v[1]][-1 if v[0] == "left" else 0]["instrument"]),
        "Is this sound from the instrument in the video?": ("AV/Ext", lambda: yn(all(p["slot"] for p in heard))),
        "Is the <Object> in the video always playing?": ("AV/Ext", lambda: yn(
            by[v[0]]["slot"] and by[v[0]]["sound"] and dur(by[v[0]]) == 10)),
        "Is the <Object> in the video playing?": ("AV/Ext", lambda: yn(by[v[0]]["slot"] and by[v[0]]["sound"])),
        "How many instruments are sounding in the video?": ("AV/Cnt", lambda: NUMBERS[len(seen_heard)]),
        "How many instruments in the video did not sound from beginning to end?": (
            "AV/Cnt", lambda: NUMBERS[sum(not p["sound"] for p in seen)]),
        "How many instruments are on the <LR> of the <LL> instrument?": ("AV/Cnt", lambda: NUMBERS[sum(
            (SLOT_X[p["slot"]] - SLOT_X[seen_heard[-1 if v[1] == "loudest" else 0]["slot"]])
            * (1 if v[0] == "right" else -1) > 0
            for p in seen)]),
        "Is the instrument on the <LR> playing?": ("AV/Ext", lambda: yn(at[v[0]]["sound"])),
        "How many sounding <Object> in the video\uff1f": (
            "AV/Cnt", lambda: NUMBERS[sum(p["instrument"] == v[0] for p in seen_heard)]),
        "Where is the <LL> instrument?": ("AV/Loc", lambda: seen_heard[-1 if v[0] == "loudest" else 0]["slot"]),
        "Where is the sounding instrument?": ("AV/Loc", lambda: seen_heard[0]["slot"] if len(seen_heard) == 1 else "?"),
        "Is the <FL> sound coming from the <LR> instrument?": (
            "AV/Loc", lambda: yn(heard[0 if v[0] == "first" else -1]["slot"] == v[1])),
        "Is the instrument on the <LR> louder than the instrument on the <LR>?": (
            "AV/Cmp", lambda: yn(level(at[v[0]]) > level(at[v[1]]))),
        "Is the instrument on the <LR> playing longer than the instrument on the <LR>?": (
            "AV/Cmp", lambda: yn(dur(at[v[0]]) > dur(at[v[1]]))),
        "Where is the <FL> sounding instrument?": ("AV/Tmp", lambda: heard[0 if v[0] == "first" else -1]["slot"]),
        "Where is the <TH> instrument that comes in?": (
            "AV/Tmp", lambda: heard[["first", "second", "third"].index(v[0])]["slot"]),
        "Does the instrument on the <LR> start playing <BA> the instrument on the <LR>?": (
            "AV/Tmp", lambda: yn((at[v[0]]["sound"]["onset"] < at[v[2]]["sound"]["onset"]) == (v[1] == "before"))),
    }
    kind, fn = t[template]
    return kind, fn()


SHORT = {("Audio", "Counting"): "A/Cnt", ("Audio", "Comparative"): "A/Cmp", ("Visual", "Counting"): "V/Cnt",
         ("Visual", "Location"): "V/Loc", ("Audio-Visual", "Existential"): "AV/Ext",
         ("Audio-Visual", "Counting"): "AV/Cnt", ("Audio-Visual", "Location"): "AV/Loc",
         ("Audio-Visual", "Comparative"): "AV/Cmp", ("Audio-Visual", "Temporal"): "AV/Tmp"}


def test_release_layout_read_without_a_skip(small):
    videos = set()
    for split in release.SPLITS:
        text = (small / "json" / f"avqa-{split}.json").read_text()
        records = json.loads(text)
        assert records and all(list(r) == list(release.KEYS) for r in records)  # the release's keys, in its order
        assert all(isinstance(r["type"], str) and isinstance(r["templ_values"], str) for r in records)
        assert '"anser"' in text and '"type": "[\\"' in text
        sq = release.read_split(small / "json", split)
        assert sq.skipped == () and len(sq.questions) == len(records)
        assert {release.video_kind(q.video_id) for q in sq.questions} == {"real"}
        videos |= {q.video_id for q in sq.questions}
    assert {p.stem for p in (small / "videos").glob("*.mp4")} == videos
    ids = [q.question_id for sq in release.read_release(small / "json").values() for q in sq.questions]
    assert len(ids) == len(set(ids))
    shared = release.shared_videos(release.read_release(small / "json"))
    assert sum(shared.values()) > 0  # split by question, as the release: some videos in two splits


def test_answers_follow_from_the_scenes(small):
    scenes = {s["video_id"]: s for s in json.loads((small / "scenes.json").read_text())["scenes"]}
    kinds, templates = Counter(), set()
    for split in release.SPLITS:
        for r in json.loads((small / "json" / f"avqa-{split}.json").read_text()):
            kind, answer = _answer(scenes[r["video_id"]], r["question_content"], json.loads(r["templ_values"]))
            assert (SHORT[tuple(json.loads(r["type"]))], r["anser"]) == (kind, answer), r
            kinds[kind] += 1
            templates.add(r["question_content"])
    assert set(kinds) == set(SHORT.values())
    for s in scenes.values():  # "first", "loudest", "louder" always have one answer
        sounds = [p["sound"] for p in s["players"] if p["sound"]]
        assert sounds and len({x["onset"] for x in sounds}) == len(sounds) == len({x["level"] for x in sounds})
        assert 1 <= sum(p["slot"] is not None for p in s["players"]) <= 3


@pytest.mark.parametrize("per_video,instruments", [(7, 8), (18, 4)])
def test_all_templates_answered_consistently_over_a_default_size_set(per_video, instruments):
    """Questions only (no video): the default 240 scenes use every template; every answer checks out; no
    question twice for a video; the majority answer of each kind is a weak baseline in every split."""
    scenes = make_scenes(240, 0, instruments)
    records = make_questions(scenes, 0, per_video, instruments)
    names = {a for rs in records.values() for r in rs for a in [r["anser"], *json.loads(r["templ_values"])]}
    assert len(names & set(NAMES)) == instruments
    by_id = {s.video_id: s.to_json() for s in scenes}
    asked = Counter((r["video_id"], r["question_content"], r["templ_values"]) for rs in records.values() for r in rs)
    assert set(asked.values()) == {1} and len(asked) > 0.95 * 240 * per_video
    used = set()
    for split, recs in records.items():
        for r in recs:
            kind, answer = _answer(by_id[r["video_id"]], r["question_content"], json.loads(r["templ_values"]))
            assert (SHORT[tuple(json.loads(r["type"]))], r["anser"]) == (kind, answer), r
            used.add(r["question_content"])
        shares = majority_share(recs)
        assert len(shares) == 9
        bound = 0.55 if split == "train" else 0.62  # yes/no kinds sit at ~0.5; val/test are small
        assert max(shares.values()) <= bound, (split, shares)
        assert sorted(shares.values())[4] <= 0.35, (split, shares)  # most kinds have 3+ answers
    assert len(used) == 32


def _recast(scene: dict, keep: str, rng: np.random.Generator) -> dict:
    """The scene with one stream drawn again as the generator draws it, the other kept: ``keep="sound"`` keeps
    every heard instrument and its sound and redraws who is seen where (heard ones may move in or out of the
    frame, silent ones come and go); ``keep="picture"`` keeps who is seen where and redraws the sounds."""
    ps, used = scene["players"], {p["instrument"] for p in scene["players"]}
    spare = [n for n in NAMES if n not in used]
    rng.shuffle(spare)
    if keep == "sound":
        heard = [dict(p) for p in ps if p["sound"]]
        off = int(rng.integers(len(heard))) if rng.random() < 0.35 else -1
        free = list(rng.permutation(list(SLOT_X)))
        for i, p in enumerate(heard):
            p["slot"] = None if i == off or not free else str(free.pop())
        silent = [{"instrument": spare.pop(), "slot": str(x), "sound": None} for x in free if rng.random() < 0.5]
        out = heard + silent
        if not any(p["slot"] for p in out):
            out.append({"instrument": spare.pop(), "slot": str(free[0]) if free else "left", "sound": None})
        return {**scene, "players": out}
    seen = [dict(p, sound=None) for p in ps if p["slot"]]
    extra = [{"instrument": spare.pop(), "slot": None, "sound": None}] if rng.random() < 0.35 else []
    out = seen + extra
    loud = [p for p in out if p["slot"] is None or rng.random() < 0.65] or [out[0]]
    onsets, levels = rng.choice(6, len(loud), replace=False), rng.choice(4, len(loud), replace=False)
    for p, onset, level in zip(loud, onsets, levels):
        end = 10 if rng.random() < 0.6 else int(rng.integers(onset + 3, 10))
        p["sound"] = {"onset": int(onset), "end": end, "level": int(level)}
    return {**scene, "players": out}


def _one_stream_best(records, scenes, keep: str, draws: int = 12) -> dict[str, float]:
    """Per kind, about the best accuracy of a model that perceives only the kept stream perfectly: it cannot
    tell the scene from scenes with that stream and the other redrawn, so its best answer is the most frequent
    one over such scenes (``draws`` of them, where the question still applies)."""
    rng = np.random.default_rng(0)
    hits, total = Counter(), Counter()
    for r in records:
        values = json.loads(r["templ_values"])
        kind, answer = _answer(scenes[r["video_id"]], r["question_content"], values)
        votes = Counter()
        for _ in range(draws):
            try:
                _, other = _answer(_recast(scenes[r["video_id"]], keep, rng), r["question_content"], values)
            except (KeyError, IndexError, TypeError):
                continue  # the question does not apply to the redrawn scene (e.g. no instrument on the left)
            votes[other] += other != "?"
        if +votes:
            total[kind] += 1
            hits[kind] += (+votes).most_common(1)[0][0] == answer
    pooled_av = sum(hits[k] for k in total if k.startswith("AV/")) / sum(total[k] for k in total if k.startswith("AV/"))
    return {**{k: hits[k] / total[k] for k in total}, "AV": pooled_av}


@pytest.mark.slow
def test_each_kind_needs_its_streams():
    """Audio questions need only the sound, visual ones only the picture; on audio-visual questions a perfect
    one-stream model stays near 50% (pooled), where seeing and hearing answers all."""
    scenes = make_scenes(240, 0)
    records = [r for recs in make_questions(scenes, 0, 7).values() for r in recs]
    by_id = {s.video_id: s.to_json() for s in scenes}
    audio_only = _one_stream_best(records, by_id, keep="sound")
    visual_only = _one_stream_best(records, by_id, keep="picture")
    for kind in SHORT.values():
        if kind.startswith("A/"):
            assert audio_only[kind] == 1 and visual_only[kind] < 0.75, kind
        elif kind.startswith("V/"):
            assert visual_only[kind] == 1 and audio_only[kind] < 0.75, kind
        else:
            assert max(audio_only[kind], visual_only[kind]) < 0.8, (kind, audio_only[kind], visual_only[kind])
    assert audio_only["AV"] < 0.6 and visual_only["AV"] < 0.6, (audio_only, visual_only)


def test_deterministic_and_reused(tmp_path):
    spec = SynthSpec(size=48, aac_fast=True)
    a = make_musicavqa(tmp_path / "a", videos=3, seed=5, questions=5, spec=spec)
    b = make_musicavqa(tmp_path / "b", videos=3, seed=5, questions=5, spec=spec)
    assert not a["reused"] and not b["reused"]
    for name in ("json/avqa-train.json", "json/avqa-val.json", "json/avqa-test.json", "scenes.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for mp4 in (tmp_path / "a" / "videos").glob("*.mp4"):
        assert mp4.read_bytes() == (tmp_path / "b" / "videos" / mp4.name).read_bytes()
    assert make_musicavqa(tmp_path / "a", videos=3, seed=5, questions=5, spec=spec)["reused"]
    c = make_musicavqa(tmp_path / "a", videos=3, seed=6, questions=5, spec=spec)  # other arguments: rewritten
    assert not c["reused"]
    assert (tmp_path / "a" / "scenes.json").read_bytes() != (tmp_path / "b" / "scenes.json").read_bytes()
    with pytest.raises(ValueError, match="--questions"):
        make_musicavqa(tmp_path / "d", videos=3, questions=31)
    with pytest.raises(ValueError, match="--instruments"):
        make_musicavqa(tmp_path / "d", videos=3, instruments=3)


def test_mp4_shows_and_sounds_the_scene(small):
    scenes = json.loads((small / "scenes.json").read_text())
    names = [i["name"] for i in scenes["instruments"]]
    colours = {i["name"]: np.array(COLOURS[i["colour"]], float) for i in scenes["instruments"]}
    scene = max(scenes["scenes"], key=lambda s: len(s["players"]))  # the busiest scene
    frames, audio = decode_clip(small / "videos" / f"{scene['video_id']}.mp4", size=96)
    assert re.fullmatch(r"[0-9]{8}", scene["video_id"])
    seen = {p["slot"]: p["instrument"] for p in scene["players"] if p["slot"]}
    for slot, x in SLOT_X.items():
        part = frames[5, 20:76, x * 32 + 4:(x + 1) * 32 - 4].reshape(-1, 3).astype(float)
        bright = part[part.max(1) > 100]  # the pattern's pixels (the background is dark)
        if slot not in seen:
            assert len(bright) < 0.05 * len(part), slot
        else:
            want = colours[seen[slot]]
            assert np.abs(bright.mean(0) - want).max() < 60, (slot, bright.mean(0), want)
    for second in range(10):
        on = [p for p in scene["players"] if p["sound"] and p["sound"]["onset"] <= second < p["sound"]["end"]]
        chunk = audio[second * 16000 + 1600:(second + 1) * 16000 - 1600]
        if not on:
            assert np.sqrt((chunk ** 2).mean()) < 0.01
            continue
        loudest = max(on, key=lambda p: p["sound"]["level"])
        spectrum = np.abs(np.fft.rfft(chunk))
        peak_hz = np.argmax(spectrum) * 16000 / len(chunk)
        f0 = tone(names.index(loudest["instrument"]), len(names))
        assert abs(peak_hz - f0) < 0.03 * f0 + 10, (second, peak_hz, f0)


def test_builds_into_avqa_shards(small, tmp_path):
    """Through the real builder (even sampling): every question written, none skipped, one sample per video
    and split, the answer histograms those of the json files."""
    from avpea_dist.data.build import BuildOptions
    from avpea_dist.datasets.musicavqa.build import build_musicavqa

    m = build_musicavqa(small / "json", small / "videos", tmp_path / "shards",
                        BuildOptions(workers=1, frame_size=32, sampling="even", min_seconds=1.0), progress=False)
    assert m["schema"] == "avqa"
    for split in release.SPLITS:
        records = json.loads((small / "json" / f"avqa-{split}.json").read_text())
        s = m["splits"][split]
        assert (s["records"], s["questions"], s["skipped"]) == (len(records), len(records), [])
        assert s["samples"] == len({r["video_id"] for r in records})
        hist = {}
        for r in records:
            kind = "/".join(json.loads(r["type"]))
            hist.setdefault(kind, Counter())[r["anser"]] += 1
        assert s["answer_histogram"] == {k: dict(v) for k, v in hist.items()}


def test_shards_synth_without_a_dataset_still_writes_the_ave_layout(tmp_path):
    assert main(["shards", "synth", "--out", str(tmp_path / "ave"), "--clips", "3", "--size", "32"]) == 0
    assert (tmp_path / "ave" / "Annotations.txt").is_file() and len(list((tmp_path / "ave" / "AVE").glob("*.mp4"))) == 3
    frames, _ = decode_clip(next((tmp_path / "ave" / "AVE").glob("*.mp4")), size=32)
    assert frames.shape == (10, 32, 32, 3)
