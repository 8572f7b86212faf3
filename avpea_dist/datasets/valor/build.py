"""`avpea shards build valor`: VALOR-32K (either annotation layout, ``release.py``) -> shards of schema 'captions'.

One sample per (split, video) holding all of its captions of that split, stored as text (tokenisation happens in
the loader, so one set of shards serves any text model). The manifest adds ``most_frequent_caption`` (the
captioning baseline: the most frequent train caption written, ties broken by first occurrence),
``annotations`` (the layout read and how val was formed) and, unless ``text=False``, ``text: {"folder":
"text", ...}``: the embedded text model (``text.py``) trained on the train captions written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ...data.builder import BuildOptions, DatasetBuilder
from ...data.folder_cache import folder_hashes
from ...data.manifest import MANIFEST
from ...data.sample_build import ANY_LENGTH, Item, ItemsRelease, Schema, SplitItems
from ...data.videos import video_paths
from .release import SplitCaptions, read_release
from .text import TEXT_FOLDER, TextSpec, save_text_folder

SCHEMA = Schema("captions", "captions", "{id (video id, verbatim), key (== the tar key), split, captions: [str, ...] "
                "(every caption of the video in this split, file order)}")


def _split_items(sc: SplitCaptions, videos: dict[str, str]) -> SplitItems:
    items = [Item(sc.split, index, vid, videos[vid], {"captions": caps},
                  tuple({"id": vid} for _ in caps))
             for index, (vid, caps) in enumerate(sc.videos.items())]
    return SplitItems(sc.records, items, list(sc.skipped))


def most_frequent(captions: list[str]) -> str | None:
    """The most frequent caption, ties broken by first occurrence (Counter keeps insertion order)."""
    counts = Counter(captions)
    return max(counts, key=counts.__getitem__) if counts else None


def _text_record(out: Path, train: list[str], spec: TextSpec) -> dict[str, Any]:
    """The manifest's ``text``: the folder an earlier build saved from the same captions and spec, else a new one."""
    digest = hashlib.sha256(json.dumps([train, asdict(spec)]).encode()).hexdigest()[:16]
    try:
        previous = json.loads((out / MANIFEST).read_text()).get("text") or {}
    except (OSError, ValueError):
        previous = {}
    if previous.get("source_sha256") == digest and (out / TEXT_FOLDER / "config.json").is_file():
        record = dict(previous)
    else:
        record = {"folder": TEXT_FOLDER, **save_text_folder(out / TEXT_FOLDER, train, spec), "source_sha256": digest}
    # the files and their hashes: a reader of remote shards fetches exactly these and checks them
    return {**record, "files": folder_hashes(out / TEXT_FOLDER)}


class ValorBuilder(DatasetBuilder):
    name = "valor"
    schema = "captions"
    unit = "videos"
    defaults: dict[str, Any] = {"min_seconds": 1.0, "sampling": "even"}  # VALOR has 2 s clips

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--ann-dir", required=True,
                            help="folder holding desc_{train,val,test}.json or VALOR's txt_mapper_en.json")
        parser.add_argument("--videos", required=True, help="folder of <video_id>.mp4 files")
        parser.add_argument("--val-fraction", type=float, default=0.1,
                            help="VALOR's own layout without val_id.json: share of the train videos held out as val "
                                 "(seeded by --order-seed; default 0.1)")
        parser.add_argument("--no-text", action="store_true",
                            help="do not save the embedded text model (WordPiece tokenizer + tiny BERT trained on "
                                 "the train captions) in OUT/text; runs then name a text model folder or hub name")

    def source(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"ann_dir": Path(args.ann_dir), "videos": Path(args.videos), "val_fraction": args.val_fraction,
                "text": not args.no_text}

    def release(self, out: Path, opts: BuildOptions, *, ann_dir: str | Path, videos: str | Path, text: bool = True,
                text_spec: TextSpec = TextSpec(), val_fraction: float = 0.1) -> ItemsRelease:
        videos = Path(videos)
        if not videos.is_dir():
            raise FileNotFoundError(f"--videos {videos} is not a folder; pass the folder of <video_id>.mp4 files")
        splits, annotations = read_release(ann_dir, val_fraction=val_fraction, seed=opts.order_seed)
        paths = video_paths(videos, {vid for sc in splits.values() for vid in sc.videos})
        items = {split: _split_items(sc, paths) for split, sc in splits.items()}

        def summary(written: dict[str, list[Item]],
                    skipped: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
            train = [c for item in written.get("train", []) for c in item.meta["captions"]]
            top: dict[str, Any] = {"annotations": annotations, "most_frequent_caption": most_frequent(train)}
            if text and train:
                top["text"] = _text_record(out, train, text_spec)
            return top, {}

        return ItemsRelease(items, schema=SCHEMA, source=str(Path(ann_dir).resolve()), summary=summary,
                            identity=lambda item: [{"id": item.id, "caption": c} for c in item.meta["captions"]])

    def report_lines(self, manifest: dict[str, Any], out: str) -> list[str]:
        text = f", text model in {out}/{manifest['text']['folder']}" if "text" in manifest else ""
        return [f"shards in {out}: VALOR ({manifest['annotations']['layout']} layout){text}"]


BUILDER = ValorBuilder()


def build_valor(ann_dir: str | Path, videos: str | Path, out: str | Path, opts: BuildOptions = ANY_LENGTH,
                *, text: bool = True, text_spec: TextSpec = TextSpec(), val_fraction: float = 0.1,
                progress: bool = True) -> dict[str, Any]:
    """Build (or resume) the VALOR-32K shards in one task; -> the manifest, with an extra ``"stats"`` entry
    (not stored)."""
    return BUILDER.build(out, opts, progress=progress, ann_dir=ann_dir, videos=videos, text=text,
                         text_spec=text_spec, val_fraction=val_fraction)
