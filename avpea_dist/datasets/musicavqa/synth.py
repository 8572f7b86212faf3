"""`avpea shards synth musicavqa`: an embedded AVQA set in the MUSIC-AVQA release layout, from a seed.

Writes ``OUT/json/avqa-{train,val,test}.json`` (the release's keys and spellings: ``type`` and ``templ_values``
as JSON strings, ``anser``, ``question_deleted`` 0, 8-digit video ids), ``OUT/videos/<video_id>.mp4`` (10 s,
H.264 + AAC), ``OUT/scenes.json`` (every scene: who is seen where, who is heard when and how loud; the
ground truth the answers come from) and ``OUT/synth.json`` (the arguments and counts: a folder holding it
with the same arguments is reused as is). Scenes and question templates: ``synth_scene``, ``synth_questions``.

Questions are chosen per video (``questions`` of them, distinct, one kind after another) so that every kind
is asked about as often as the others and every template's answers about equally often in each split (greedy:
the least used answer of the template, then the least used template), so that neither the majority answer of
a kind nor the question text predicts much. The encoder runs once per video whatever its number of questions:
more questions per video are more supervision at almost no cost. Like the release, splits are by question: each video
has a home split that gets most of its questions, the rest go elsewhere, so some videos are in two splits.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from ...data.builder import SynthSource
from ...data.synthmedia import MARKER, SynthSpec, add_media_arguments, finished_set, media_options, write_mp4
from ...fileio import atomic_write_json
from .release import SPLITS
from .synth_questions import KINDS, Candidate
from .synth_scene import (INSTRUMENTS, LEVEL_GAINS, SECONDS, Scene, draw_scene, instrument_pool, render_audio,
                          render_frames)

SPLIT_SHARES = {"train": 0.65, "val": 0.15, "test": 0.2}
HOME_SHARE = 0.95  # of a video's questions in its home split; the rest spread over the other two
MAX_QUESTIONS = 30


def video_ids(videos: int, seed: int) -> list[str]:
    """Distinct 8-digit ids, as the release's real videos have."""
    import numpy as np  # here, not at the top: `avpea --help` imports this module for its options
    rng = np.random.default_rng([seed, 0])
    return [f"{int(i):08d}" for i in rng.choice(10 ** 8, videos, replace=False)]


def make_scenes(videos: int, seed: int, instruments: int = len(INSTRUMENTS)) -> list[Scene]:
    import numpy as np
    pool = instrument_pool(instruments)
    return [draw_scene(vid, np.random.default_rng([seed, 1, n]), pool)
            for n, vid in enumerate(video_ids(videos, seed))]


class _Balancer:
    """Greedy choice of questions: kinds evenly, then within a kind the candidate whose answer is the least used
    for its template in its split (so the question text alone says little about the answer), then the least
    used template."""

    def __init__(self, pool: tuple[int, ...]) -> None:
        self.pool = pool  # instrument kinds of the set: the ones asked about as absent
        self.kinds: Counter = Counter()
        self.answers: dict[tuple[str, str], Counter] = defaultdict(Counter)  # (split, template)
        self.templates: Counter = Counter()

    def choose(self, scene: Scene, splits: list[str], rng: np.random.Generator) -> list[tuple[str, Candidate]]:
        """``len(splits)`` distinct questions: one per kind in turn (the least asked kinds first), then another
        round over the kinds, and so on while the scene supports more; answers balanced within each split."""
        present = {p.instrument for p in scene.players}
        absent = [int(k) for k in rng.permutation(len(INSTRUMENTS)) if k in self.pool and k not in present]
        offers = [(i, kind(scene, absent)) for i, kind in enumerate(KINDS)]
        noise = rng.random(len(offers))
        offers = [o for _, o in sorted(zip(noise, offers), key=lambda x: (self.kinds[x[1][0]], x[0]))]
        turns = [(i, cands) for _ in range(max(len(c) for _, c in offers)) for i, cands in offers]
        chosen: list[tuple[str, Candidate]] = []
        for i, cands in turns:
            if len(chosen) == len(splits):
                break
            if not cands:
                continue
            split = splits[len(chosen)]
            tie = rng.random(len(cands))
            best = min(range(len(cands)), key=lambda j: (self.answers[split, cands[j].template][cands[j].answer],
                                                         self.templates[cands[j].template], tie[j]))
            c = cands.pop(best)  # asked once per video
            self.kinds[i] += 1
            self.answers[split, c.template][c.answer] += 1
            self.templates[c.template] += 1
            chosen.append((split, c))
        return chosen


def _split_of(home: str, rng: np.random.Generator) -> str:
    import numpy as np
    if rng.random() < HOME_SHARE:
        return home
    others = [s for s in SPLITS if s != home]
    weights = np.array([SPLIT_SHARES[s] for s in others])
    return others[int(rng.choice(len(others), p=weights / weights.sum()))]


def _homes(videos: int, seed: int) -> list[str]:
    import numpy as np
    order = np.random.default_rng([seed, 2]).permutation(videos)
    n_val, n_test = (max(1, round(SPLIT_SHARES[s] * videos)) for s in ("val", "test"))
    n_train = videos - n_val - n_test  # >= 1: at least 3 videos
    homes = ["test"] * videos
    for rank, n in enumerate(order):
        homes[int(n)] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return homes


def make_questions(scenes: list[Scene], seed: int, per_video: int,
                   instruments: int = len(INSTRUMENTS)) -> dict[str, list[dict[str, Any]]]:
    """{split: release records}, question ids counting from 1 in scene order."""
    import numpy as np
    rng = np.random.default_rng([seed, 3])
    balancer, homes = _Balancer(instrument_pool(instruments)), _homes(len(scenes), seed)
    records: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    qid = 0
    for scene, home in zip(scenes, homes):
        splits = [_split_of(home, rng) for _ in range(per_video)]
        for split, c in balancer.choose(scene, splits, rng):
            qid += 1
            records[split].append({
                "video_id": scene.video_id, "question_id": qid, "type": json.dumps(list(c.type)),
                "question_content": c.template, "templ_values": json.dumps(list(c.values)),
                "question_deleted": 0, "anser": c.answer})
    return records


def majority_share(records: list[dict[str, Any]]) -> dict[str, float]:
    """{"<scenario>/<kind>": share of the kind's most frequent answer} (the majority baseline per kind)."""
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        by_kind["/".join(json.loads(r["type"]))][r["anser"]] += 1
    return {k: round(max(c.values()) / sum(c.values()), 3) for k, c in sorted(by_kind.items())}


def make_musicavqa(out: str | Path, videos: int = 240, seed: int = 0, questions: int = 7,
                   spec: SynthSpec = SynthSpec(size=96, aac_fast=True), progress: bool = False,
                   instruments: int = len(INSTRUMENTS)) -> dict[str, Any]:
    """Write the set (see the module docstring) -> the summary also kept in ``OUT/synth.json``.
    A folder already holding a finished set with the same arguments is reused."""
    import numpy as np
    if videos < 3:
        raise ValueError(f"--videos={videos} must be >= 3 (one home video per split at least)")
    if not 1 <= questions <= MAX_QUESTIONS:
        raise ValueError(f"--questions={questions} must lie in [1, {MAX_QUESTIONS}] (per video; a scene with fewer "
                         "distinct questions gets them all)")
    if spec.seconds != SECONDS:
        raise ValueError(f"clips are {SECONDS} s long (one segment per second); got seconds={spec.seconds}")
    instrument_pool(instruments)  # checks the number
    out = Path(out)
    wanted = {"dataset": "musicavqa", "videos": videos, "seed": seed, "questions": questions,
              "instruments": instruments,
              "size": spec.size, "fps": spec.fps, "sample_rate": spec.sample_rate}
    done = finished_set(out, wanted)
    if done is not None:
        return {**done, "reused": True}
    (out / MARKER).unlink(missing_ok=True)  # a crash below must not leave an older set looking finished
    t = time.perf_counter()
    scenes = make_scenes(videos, seed, instruments)
    records = make_questions(scenes, seed, questions, instruments)
    from tqdm import tqdm

    for n, scene in enumerate(tqdm(scenes, desc="synth musicavqa", unit="video", disable=not progress)):
        rng = np.random.default_rng([seed, 4, n])
        frames = render_frames(scene, spec.size, spec.fps, rng)
        write_mp4(out / "videos" / f"{scene.video_id}.mp4", frames, render_audio(scene, spec.sample_rate, rng), spec)
    for split, recs in records.items():
        atomic_write_json(out / "json" / f"avqa-{split}.json", recs)
    atomic_write_json(out / "scenes.json", {
        "instruments": [{"name": n, "colour": c, "pattern": p} for n, c, p in INSTRUMENTS],
        "level_gains": list(LEVEL_GAINS), "scenes": [s.to_json() for s in scenes]})
    summary = {**wanted, "questions_per_split": {s: len(r) for s, r in records.items()},
               "videos_per_split": {s: len({r["video_id"] for r in recs}) for s, recs in records.items()},
               "majority_share_test": majority_share(records["test"]),
               "seconds": round(time.perf_counter() - t, 1)}
    atomic_write_json(out / MARKER, summary)  # last: its presence means the folder is complete
    return {**summary, "reused": False}


class MusicAvqaSynth(SynthSource):
    """``avpea shards synth musicavqa``: the embedded set of the AVQA demo."""

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--videos", type=int, default=240, help="number of videos (default 240)")
        parser.add_argument("--questions", type=int, default=7, help="distinct questions per video (1-30, default 7)")
        parser.add_argument("--instruments", type=int, default=8, help="instrument kinds used (4-8, default 8)")
        add_media_arguments(parser, size=96)

    def options(self, args: Any) -> dict[str, Any]:
        return {"videos": args.videos, "questions": args.questions, "instruments": args.instruments,
                **media_options(args)}

    def make(self, out: Path, progress: bool = False, *, videos: int = 240, seed: int = 0, questions: int = 7,
             instruments: int = len(INSTRUMENTS), size: int = 96, fps: int = 4, sample_rate: int = 16000,
             channels: int = 1, aac_fast: bool = True) -> dict[str, Any]:
        spec = SynthSpec(size=size, fps=fps, sample_rate=sample_rate, channels=channels, aac_fast=aac_fast)
        return make_musicavqa(out, videos=videos, seed=seed, questions=questions, spec=spec, progress=progress,
                              instruments=instruments)

    def source(self, out: Path) -> dict[str, Any]:
        return {"json_dir": Path(out) / "json", "videos": Path(out) / "videos"}

    def describe(self, summary: dict[str, Any], out: str) -> str:
        what = "reused the finished" if summary["reused"] else f"wrote in {summary['seconds']:.0f} s a"
        return (f"{what} MUSIC-AVQA-layout set in {out}: {summary['videos']} videos, questions "
                + ", ".join(f"{k} {v}" for k, v in summary["questions_per_split"].items())
                + f"; next: avpea shards build musicavqa --json-dir {out}/json --videos {out}/videos --out SHARDS")


SYNTH = MusicAvqaSynth()
