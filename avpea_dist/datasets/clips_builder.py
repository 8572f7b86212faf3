"""The builder both labelled-segment releases share (``datasets/vggsound``, ``datasets/audioset``): the video
options (``--videos``, ``--video-pattern``, ``--full-videos``), the val hold-out, and the report lines.
A dataset adds its annotation options and its reader (``read``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..data.builder import BuildOptions, DatasetBuilder
from .labelled_clips import SCHEMA, ClipsRelease, Rows
from ..data.video_files import check_pattern


class ClipsBuilder(DatasetBuilder):
    schema = SCHEMA
    unit = "rows"
    defaults: dict[str, Any] = {"min_seconds": 1.0, "sampling": "even"}  # 10 s segments, some cut short
    video_pattern = "{id}.mp4"
    """This dataset's usual file name of a downloaded segment."""

    def add_annotation_arguments(self, parser: argparse.ArgumentParser) -> None:
        raise NotImplementedError

    def annotation_source(self, args: argparse.Namespace) -> dict[str, Any]:
        raise NotImplementedError

    def read(self, **annotations: Any) -> Rows:
        raise NotImplementedError

    def source_path(self, **annotations: Any) -> Path:
        """The annotation file the manifest's ``source`` names."""
        raise NotImplementedError

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        self.add_annotation_arguments(parser)
        parser.add_argument("--videos", required=True, help="folder of the downloaded videos")
        parser.add_argument("--video-pattern", default=self.video_pattern,
                            help="file name of a segment's video under --videos, over {id} {start} {end} {start_ms} "
                                 "{end_ms} (seconds: int when whole); another extension of the same name is found "
                                 f"too (default {self.video_pattern!r})")
        parser.add_argument("--full-videos", action="store_true",
                            help="the files are whole videos: cut each segment at its start (default: each file "
                                 "holds the segment itself, as the usual downloaders save it)")
        parser.add_argument("--val-fraction", type=float, default=0.1,
                            help="share of the train videos held out as val, seeded by --order-seed (default 0.1)")

    def source(self, args: argparse.Namespace) -> dict[str, Any]:
        return {**self.annotation_source(args), "videos": Path(args.videos), "video_pattern": args.video_pattern,
                "full_videos": args.full_videos, "val_fraction": args.val_fraction}

    def release(self, out: Path, opts: BuildOptions, *, videos: str | Path, video_pattern: str | None = None,
                full_videos: bool = False, val_fraction: float = 0.1, **annotations: Any) -> ClipsRelease:
        if full_videos and opts.sampling != "even":
            raise ValueError("--full-videos cuts segments out of whole videos: it needs --sampling even")
        pattern = check_pattern(video_pattern or self.video_pattern)
        rows = self.read(**annotations)
        source = str(self.source_path(**annotations).resolve())
        files = tuple(Path(p) for v in annotations.values() for p in (v if isinstance(v, (list, tuple)) else [v])
                      if isinstance(p, (str, Path)))  # what the fingerprint streams
        return ClipsRelease(rows, videos, pattern=pattern, full_videos=full_videos, dataset=self.name,
                            source=source, val_fraction=val_fraction, seed=opts.order_seed, annotation_files=files)

    def report_lines(self, manifest: dict[str, Any], out: str) -> list[str]:
        a = manifest["availability"]
        per = ", ".join(f"{k} {v['samples']}/{v['rows']} ({v['missing_videos']} videos missing)"
                        for k, v in manifest["splits"].items())
        return [f"shards in {out}: {self.name}, {len(manifest['classes'])} classes, {a['written']} of {a['rows']} "
                f"rows written ({100 * a['available_fraction']:.1f} %): {per}"]
