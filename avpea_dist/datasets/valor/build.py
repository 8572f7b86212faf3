"""`avpea shards build valor`: VALOR-32K (either annotation layout, ``release.py``) -> shards of schema 'captions'.

One sample per (split, video) holding all of its captions of that split, stored as text (tokenisation happens in
the loader, so one set of shards serves any text model). The manifest adds ``most_frequent_caption`` (the
captioning baseline: the most frequent train caption written, ties broken by first occurrence),
``annotations`` (the layout read and how val was formed) and, unless ``text=False``, ``text: {"folder":
"text", ...}``: the embedded text model (``text.py``) trained on the train captions written.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ...data.build import BuildOptions
from ...data.manifest import MANIFEST
from ...data.sample_build import ANY_LENGTH, Item, Schema, SplitItems, build_samples, video_paths
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
        return previous
    return {"folder": TEXT_FOLDER, **save_text_folder(out / TEXT_FOLDER, train, spec), "source_sha256": digest}


def build_valor(ann_dir: str | Path, videos: str | Path, out: str | Path, opts: BuildOptions = ANY_LENGTH,
                *, text: bool = True, text_spec: TextSpec = TextSpec(), val_fraction: float = 0.1,
                progress: bool = True) -> dict[str, Any]:
    """Build (or resume) the VALOR-32K shards; -> the manifest, with an extra ``"stats"`` entry (not stored)."""
    videos, out = Path(videos), Path(out)
    if not videos.is_dir():
        raise FileNotFoundError(f"--videos {videos} is not a folder; pass the folder of <video_id>.mp4 files")
    splits, annotations = read_release(ann_dir, val_fraction=val_fraction, seed=opts.order_seed)
    paths = video_paths(videos, {vid for sc in splits.values() for vid in sc.videos})
    items = {split: _split_items(sc, paths) for split, sc in splits.items()}

    def summary(written: dict[str, list[Item]]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        train = [c for item in written.get("train", []) for c in item.meta["captions"]]
        top: dict[str, Any] = {"annotations": annotations, "most_frequent_caption": most_frequent(train)}
        if text and train:
            top["text"] = _text_record(out, train, text_spec)
        return top, {}

    return build_samples(out, items, opts, schema=SCHEMA, source=str(Path(ann_dir).resolve()), summary=summary,
                         progress=progress)
