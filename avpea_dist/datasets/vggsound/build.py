"""`avpea shards build vggsound --csv vggsound.csv --videos DIR --out DIR`: VGGSound -> shards of schema 'clips'.

One sample per csv row (a 10 s clip, one label); val is a seeded hold-out of the train videos. The videos are
found by ``--video-pattern`` (default ``{id}_{start:06d}.mp4``, the name VGGSound's own download script gives).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..clips_builder import ClipsBuilder
from ..labelled_clips import Rows
from .release import read_vggsound


class VGGSoundBuilder(ClipsBuilder):
    name = "vggsound"
    video_pattern = "{id}_{start:06d}.mp4"

    def add_annotation_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--csv", required=True, help="VGGSound's vggsound.csv (youtube_id,start,label,split)")

    def annotation_source(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"csv": Path(args.csv)}

    def read(self, *, csv: str | Path) -> Rows:
        return read_vggsound(csv)

    def source_path(self, *, csv: str | Path) -> Path:
        return Path(csv)


BUILDER = VGGSoundBuilder()
