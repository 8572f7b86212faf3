"""`avpea shards build musicavqa`: the MUSIC-AVQA release -> shards of schema 'avqa'.

One sample per (split, video) holding all of that video's questions of that split: the release splits by
question, so a video with questions in train and test is stored in each (and decoded once). The question
and answer vocabularies come from the train questions written (``vocab.py``; what the shards hold, so a
lost train video adds no word) and go into the manifest; per split the manifest counts ``questions``
written, lists ``skipped`` records ({id, question_id, reason}: what ``release.py`` refused, and every
question of a video that is missing or cannot be decoded) and keeps an ``answer_histogram`` per
"<scenario>/<kind>" (the majority baselines come from it).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from ...data.builder import BuildOptions, DatasetBuilder
from ...data.sample_build import ANY_LENGTH, Item, ItemsRelease, Schema, SplitItems, skip_digest
from ...data.videos import video_paths
from .release import SPLITS, ReleaseError, SplitQuestions, group_by_video, read_release
from .vocab import build_vocab

JSON_SETS = ("json_update", "json")
SCHEMA = Schema("avqa", "questions", '{id (video id, verbatim), key (== the tar key), split, questions: '
                '[{question_id, question (filled, words joined by one space), answer, type: [scenario, kind]}]}')


def release_folder(json_dir: str | Path, json_set: str = "json_update") -> Path:
    """The folder of avqa-{train,val,test}.json: ``json_dir`` itself when it holds them, else its ``json_set``
    subfolder (the release's data/ folder holds json/ and the corrected json_update/)."""
    if json_set not in JSON_SETS:
        raise ValueError(f"--json-set={json_set!r} must be one of {', '.join(JSON_SETS)}")
    root = Path(json_dir)
    if not root.is_dir():
        raise ReleaseError(f"--json-dir {root} is not a folder; pass the MUSIC-AVQA folder holding "
                           f"avqa-train.json (or its json/ and json_update/ subfolders)")
    return root if (root / "avqa-train.json").is_file() else root / json_set


def _split_items(sq: SplitQuestions, videos: dict[str, str]) -> SplitItems:
    items = [Item(sq.split, index, vid, videos[vid], {"questions": [q.to_json() for q in qs]},
                  tuple({"id": vid, "question_id": q.question_id} for q in qs))
             for index, (vid, qs) in enumerate(group_by_video(sq.questions).items())]
    return SplitItems(sq.records, items, [s.to_json() for s in sq.skipped])


def answer_histogram(items: list[Item]) -> dict[str, dict[str, int]]:
    """{"<scenario>/<kind>": {answer: count}} over the questions written, kinds and answers sorted."""
    counts: dict[str, Counter] = {}
    for item in items:
        for q in item.meta["questions"]:
            counts.setdefault("/".join(q["type"]), Counter())[q["answer"]] += 1
    return {kind: dict(sorted(counts[kind].items())) for kind in sorted(counts)}


class MusicAvqaBuilder(DatasetBuilder):
    name = "musicavqa"
    schema = "avqa"
    unit = "videos"
    defaults: dict[str, Any] = {"min_seconds": 1.0, "sampling": "even"}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json-dir", required=True, help="folder holding avqa-{train,val,test}.json, or the "
                            "release folder holding json/ and json_update/")
        parser.add_argument("--json-set", choices=JSON_SETS, default="json_update",
                            help="which question files when --json-dir holds both folders (default: the corrected "
                                 "json_update)")
        parser.add_argument("--videos", required=True, help="folder of <video_id>.mp4 files")

    def source(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"json_dir": Path(args.json_dir), "videos": Path(args.videos), "json_set": args.json_set}

    def release(self, out: Path, opts: BuildOptions, *, json_dir: str | Path, videos: str | Path,
                json_set: str = "json_update") -> ItemsRelease:
        folder = release_folder(json_dir, json_set)
        videos = Path(videos)
        if not videos.is_dir():
            raise FileNotFoundError(f"--videos {videos} is not a folder; pass the folder of <video_id>.mp4 files")
        release = read_release(folder)
        if not release["train"].questions:
            raise ReleaseError(f"{folder / 'avqa-train.json'}: no usable train question; the vocabularies are "
                               f"built from train")
        paths = video_paths(videos, {q.video_id for sq in release.values() for q in sq.questions})
        splits = {split: _split_items(release[split], paths) for split in SPLITS}
        train_questions = group_by_video(release["train"].questions)

        def summary(written: dict[str, list[Item]],
                    skipped: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
            if not written["train"]:
                raise ReleaseError(f"no train question of {folder} could be written ({skip_digest(skipped['train'])}"
                                   f"; each with its video in {out / 'parts'}): the vocabularies are built from the "
                                   f"train questions written; check --videos {videos}")
            vocab = build_vocab([q for item in written["train"] for q in train_questions[item.id]])
            return ({"vocab": vocab.to_json(), "json_set": folder.name},
                    {split: {"answer_histogram": answer_histogram(items)} for split, items in written.items()})

        return ItemsRelease(splits, schema=SCHEMA, source=str(folder.resolve()), summary=summary)

    def report_lines(self, manifest: dict[str, Any], out: str) -> list[str]:
        return [f"shards in {out}: MUSIC-AVQA ({manifest['json_set']}), {len(manifest['vocab']['answers'])} "
                f"answers and {len(manifest['vocab']['words'])} words in the train vocabulary"]


BUILDER = MusicAvqaBuilder()


def build_musicavqa(json_dir: str | Path, videos: str | Path, out: str | Path, opts: BuildOptions = ANY_LENGTH,
                    *, json_set: str = "json_update", progress: bool = True) -> dict[str, Any]:
    """Build (or resume) the MUSIC-AVQA shards in one task; -> the manifest, with an extra ``"stats"`` entry
    (not stored)."""
    return BUILDER.build(out, opts, progress=progress, json_dir=json_dir, videos=videos, json_set=json_set)
