"""`avpea shards build audioset --segments F [F ...] --labels class_labels_indices.csv --videos DIR --out DIR`:
AudioSet -> shards of schema 'clips' (multi-label).

One sample per segments row; balanced_train and unbalanced_train are train, eval is test, val is a seeded
hold-out of the train videos. The videos are found by ``--video-pattern`` (default ``Y{id}.mp4``, the name
the common AudioSet download scripts give a segment).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..clips_builder import ClipsBuilder
from ..labelled_clips import Rows
from .release import read_audioset


class AudioSetBuilder(ClipsBuilder):
    name = "audioset"
    video_pattern = "Y{id}.mp4"

    def add_annotation_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--segments", required=True, nargs="+", metavar="[SPLIT=]FILE",
                            help="AudioSet segments files: balanced_train_segments.csv, unbalanced_train_segments.csv "
                                 "(train), eval_segments.csv (test); a renamed file as train=FILE or test=FILE")
        parser.add_argument("--labels", required=True, help="AudioSet's class_labels_indices.csv")

    def annotation_source(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"segments": list(args.segments), "labels": Path(args.labels)}

    def read(self, *, segments: list[str | Path], labels: str | Path) -> Rows:
        return read_audioset(segments, labels)

    def source_path(self, *, segments: list[str | Path], labels: str | Path) -> Path:
        return Path(labels).parent


BUILDER = AudioSetBuilder()
