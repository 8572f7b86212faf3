"""`avpea search`: a trained retrieval run (``--run``) or model folder (``--model``, kept under
$XDG_CACHE_HOME/avpea/ then) answers a text query over a folder of videos or a shard split.

The clips are embedded once into an index file beside the run, ``RUN/search/<source>.safetensors``: the
clip embeddings (and, with pooling 'fine', their segment vectors), the clip ids in metadata, a fingerprint
of the source (each video's name, size and mtime; or the shard manifest's hash and split) and the SHA-256 of
the model export it was made with. A later query with the same run, export and source reuses it without
decoding a video; a retrained model or a changed folder rebuilds it. Videos go through the same
preprocessing as the shards (``media_from_video``); a video that cannot be read is skipped with its reason
(kept in the index, printed once).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import storage
from ..fileio import atomic_write_bytes, sha256_file

if TYPE_CHECKING:
    import torch

INDEX_FORMAT = "avpea-search-index-v1"
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov")


def _source(videos: str | None, shards: str | None, split: str) -> tuple[str, str, list[Path]]:
    """-> (kind, fingerprint, video files): what the index is built from, and a hash that changes with it."""
    if (videos is None) == (shards is None):
        raise ValueError("pass exactly one of --videos DIR or --shards DIR")
    if videos is not None:
        folder = Path(videos)
        if not folder.is_dir():
            raise FileNotFoundError(f"--videos {folder} is not a folder of video files")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        if not files:
            raise FileNotFoundError(f"--videos {folder} holds no video file ({', '.join(VIDEO_SUFFIXES)})")
        listing = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
        return f"videos:{folder.resolve()}", _digest(listing), files
    manifest = check_shards(shards, split)
    where = storage.check_secret_free(shards, "--shards") if storage.is_url(shards) else Path(shards).resolve()
    digest = hashlib.sha256(storage.read_bytes(str(manifest))).hexdigest()  # s3:// and http(s):// too
    return f"shards:{where}:{split}", _digest([digest, split]), []


def check_shards(shards: str, split: str) -> Path | str:
    """-> the manifest file of ``--shards``, once it is known to hold samples of the schema a retrieval
    run reads in ``split``; else one line naming what was found and what is needed."""
    from .. import plugins
    from ..data.manifest import LEGACY_SCHEMA, MANIFEST, read_description

    need = plugins.task_spec("retrieval").schema
    builds = " or ".join(f"`avpea shards build {d.name}`" for d in plugins.dataset_specs().values()
                         if d.schema == need) or "a dataset writing them"
    if storage.is_url(shards):
        folder: Any = shards  # read_manifest names a missing manifest at a URL itself
    elif not (Path(shards) / MANIFEST).is_file():
        folder = Path(shards)
        what = "is not a folder" if not folder.is_dir() else f"holds no {MANIFEST} (not a shard folder)"
        raise FileNotFoundError(f"--shards {shards} {what}; give a folder of '{need}' shards, as {builds} "
                                f"writes them")
    else:
        folder = Path(shards)
    manifest = read_description(folder)
    found = manifest.get("schema", LEGACY_SCHEMA)
    if found != need:
        readers = ", ".join(f"task {n}" for n in plugins.schema_readers(found)) or "no installed task"
        raise ValueError(f"--shards {shards} holds shards of schema '{found}' (read by {readers}); `avpea search` "
                         f"needs schema '{need}' shards, as {builds} writes them")
    entry = manifest["splits"].get(split)
    if not entry or not entry.get("shards"):
        have = ", ".join(k for k, v in manifest["splits"].items() if v.get("shards")) or "none"
        raise ValueError(f"--shards {shards}: split '{split}' holds no sample; pass --split with one of: {have}")
    return storage.join(folder, MANIFEST) if storage.is_url(folder) else folder / MANIFEST


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def index_path(run: Path, source: str) -> Path:
    return run / "search" / f"{hashlib.sha256(source.encode()).hexdigest()[:16]}.safetensors"


def read_index(path: Path, model_hash: str, fingerprint: str) -> dict[str, Any] | None:
    """The index at ``path`` if it was made by this model export from this source; else None (rebuild)."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception:  # an unreadable index is rebuilt, never trusted
        return None
    wanted = {"format": INDEX_FORMAT, "model_hash": model_hash, "fingerprint": fingerprint}
    if any(meta.get(k) != v for k, v in wanted.items()):
        return None
    return {**tensors, "ids": json.loads(meta["ids"]), "captions": json.loads(meta.get("captions", "[]")),
            "skipped": json.loads(meta.get("skipped", "[]"))}


def write_index(path: Path, index: dict[str, Any], model_hash: str, fingerprint: str, source: str) -> None:
    from safetensors.torch import save

    tensors = {k: index[k].contiguous() for k in ("clip", "clip_tokens") if index.get(k) is not None}
    meta = {"format": INDEX_FORMAT, "model_hash": model_hash, "fingerprint": fingerprint, "source": source,
            "ids": json.dumps(index["ids"]), "captions": json.dumps(index["captions"]),
            "skipped": json.dumps(index["skipped"])}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def _embed(model: Any, frames: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    import torch  # here, not at the top: `avpea --help` imports this module and must not load torch

    with torch.no_grad():
        enc = model.encode(frames if "v" in model.streams else None, audio if "a" in model.streams else None)
        return model.head.embed_clips(enc)


def build_index(model: Any, cfg: Any, task: Any, files: list[Path], shards: str | None, split: str,
                batch_size: int = 8) -> dict[str, Any]:
    """Embed every clip of the source once -> {clip (N, E), clip_tokens (N, T, E) | None, ids, captions, skipped}."""
    import torch

    from ..runtime.progress import track

    clips, tokens, ids, captions, skipped = [], [], [], [], []
    device = next(model.parameters()).device

    def add(frames: torch.Tensor, audio: torch.Tensor) -> None:
        c, t = _embed(model, frames.to(device), audio.to(device))
        clips.append(c.float().cpu())
        if t is not None:
            tokens.append(t.float().cpu())

    if shards is not None:
        from ..data.loaders import make_eval_loader

        loader = make_eval_loader(shards, split, batch_size=batch_size, img_size=cfg.model.img_size, num_workers=0,
                                  rank=0, world_size=1, codec=task.codec(split, 0))
        for batch in track(loader, "search: indexing", unit="batch"):
            if batch["key"]:
                add(batch["frames"], batch["audio"])
                ids += list(batch["clip_ids"])
                captions += [c[0] for c in batch["captions"]]
            skipped += [{"id": "?", "reason": p} for p in batch.get("problems", [])] or (
                [{"id": "?", "reason": f"unreadable sample (check: `avpea shards verify --decode {shards}`)"}]
                * int(batch.get("skipped", 0)))
    else:
        from .runmodel import media_from_video

        pending: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        for n, path in enumerate(track(files, "search: indexing", unit="video")):
            try:
                frames, audio = media_from_video(path, cfg, manifest=task.manifest)  # the run's preprocessing
                pending.append((path.name, torch.as_tensor(frames), torch.as_tensor(audio)))
            except Exception as e:  # noqa: BLE001  (any unreadable video: one line, the others still count)
                skipped.append({"id": path.name, "reason": f"{type(e).__name__}: {e}"})
            if pending and (len(pending) == batch_size or n == len(files) - 1):
                add(torch.stack([p[1] for p in pending]), torch.stack([p[2] for p in pending]))
                ids += [p[0] for p in pending]
                pending = []
    if not ids:
        raise ValueError(f"no clip of the source could be embedded ({len(skipped)} skipped: "
                         f"{skipped[0]['reason'] if skipped else 'the split is empty'})")
    return {"clip": torch.cat(clips), "clip_tokens": torch.cat(tokens) if tokens else None, "ids": ids,
            "captions": captions, "skipped": skipped}


def score(model: Any, task: Any, index: dict[str, Any], query: str) -> torch.Tensor:
    """Cosine similarity (or the fine-grained one) of the query and every indexed clip -> (N,)."""
    import torch

    from ..tasks.retrieval.head import fine_similarity

    codec = task.codec("test", 0)
    batch = codec.collate([codec.parse({"captions": [query]}, "query")])
    device = next(model.parameters()).device
    with torch.no_grad():
        text, tokens, mask = model.head.embed_texts(batch["text_ids"].to(device), batch["text_mask"].to(device))
    if index.get("clip_tokens") is not None:
        return fine_similarity(tokens.float().cpu(), mask.cpu(), index["clip_tokens"])[0]
    return index["clip"] @ text.float().cpu()[0]


def index_home(loaded: Any, model_hash: str) -> Path:
    """Where indexes live: RUN/search for a run; for a model folder, a cache folder per model (never inside
    the model folder, which a new export replaces whole): $XDG_CACHE_HOME/avpea/search/<model hash>."""
    if loaded.home is not None:
        return loaded.home
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "avpea" / model_hash[:16]


def search(run: str | Path | None, query: str, *, videos: str | None = None, shards: str | None = None,
           split: str = "test", top: int = 5, which: str = "best", rebuild: bool = False,
           model: str | Path | None = None) -> dict[str, Any]:
    """-> {"results": [{"rank", "id", "score", "caption"?}], "index": path, "reused": bool, "clips", "skipped"}.
    The model: a run folder (``run``) or a model folder / hub id (``model``)."""
    import torch

    from .runmodel import load_model

    if not query.strip():
        raise ValueError("--query is empty; give a sentence describing what is seen and heard")
    if top < 1:
        raise ValueError(f"--top {top} must be >= 1")
    source, fingerprint, files = _source(videos, shards, split)
    loaded = load_model(run, model, which=which, task="retrieval")
    cfg, task, net = loaded.cfg, loaded.task, loaded.model
    if shards is not None and getattr(net, "exported", None) is not None:
        from ..data.manifest import read_description
        from ..models.pretrained import check_compatible

        check_compatible(net.exported.config, str(model), other=f"the shards {shards}",
                         preprocessing=read_description(shards).get("preprocessing") or {})
    net.eval()
    model_hash = sha256_file(loaded.weights)
    path = index_path(index_home(loaded, model_hash), source)
    index = None if rebuild else read_index(path, model_hash, fingerprint)
    reused = index is not None
    if index is None:
        index = build_index(net, cfg, task, files, shards, split)
        write_index(path, index, model_hash, fingerprint, source)
    scores = score(net, task, index, query)
    order = torch.argsort(scores, descending=True, stable=True)[:top].tolist()
    results = [{"rank": r + 1, "id": index["ids"][i], "score": round(float(scores[i]), 4),
                **({"caption": index["captions"][i]} if index["captions"] else {})} for r, i in enumerate(order)]
    return {"results": results, "index": str(path), "reused": reused, "clips": len(index["ids"]),
            "skipped": index["skipped"]}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="text -> clips with a trained retrieval run (index built once, then reused)",
                       description="Embed the clips of --videos DIR (or a --shards split) once into "
                                   "RUN/search/*.safetensors, then print the clips that best match --query.")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--run", help="a retrieval training run folder (train.out)")
    who.add_argument("--model", help="a retrieval model folder (`avpea export`, RUN/model) or a hub id")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--videos", help="folder of videos to search")
    src.add_argument("--shards", help="caption shards folder to search (one split, see --split)")
    p.add_argument("--split", default="test", help="split of --shards (default: test)")
    p.add_argument("--query", required=True, help='what to find, e.g. "a dog barks while a car passes"')
    p.add_argument("--top", type=int, default=5, help="matches printed (default 5)")
    p.add_argument("--which", choices=("best", "final"), default="best", help="the run's export to use")
    p.add_argument("--rebuild", action="store_true", help="embed the clips again even if the index is current")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=search_cmd)


def search_cmd(args: argparse.Namespace) -> int:
    r = search(args.run, args.query, videos=args.videos, shards=args.shards, split=args.split, top=args.top,
               which=args.which, rebuild=args.rebuild, model=getattr(args, "model", None))
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    how = "reused index" if r["reused"] else "built index"
    print(f"{how} {r['index']} ({r['clips']} clips" + (f", {len(r['skipped'])} skipped" if r["skipped"] else "") + ")")
    for s in r["skipped"][:5] if not r["reused"] else []:
        print(f"  skipped {s['id']}: {s['reason']}", file=sys.stderr)
    print(f'query: "{args.query}"')
    for m in r["results"]:
        extra = f"  ({m['caption']})" if "caption" in m else ""
        print(f"  {m['rank']:>3}. {m['score']:+.4f}  {m['id']}{extra}")
    return 0
