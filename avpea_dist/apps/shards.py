"""`avpea shards build ave | musicavqa | valor | synth`, `shards synth | verify | inspect`; heavy imports happen
inside the handlers."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shards", help="build, verify and inspect WebDataset shards (AVE or synthetic)")
    ss = p.add_subparsers(dest="shards_command", metavar="SUBCOMMAND", required=True)

    b = ss.add_parser("build", help="build shards from a dataset")
    bs = b.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    a = bs.add_parser("ave", help="from the AVE release layout: Annotations.txt, {train,val,test}Set.txt, AVE/*.mp4")
    a.add_argument("--root", required=True, help="folder of the AVE release (or of `shards synth` output)")
    build_options(a)
    a.set_defaults(func=build_ave_cmd)

    q = bs.add_parser("musicavqa", help="from the MUSIC-AVQA release: avqa-{train,val,test}.json + "
                      "<video_id>.mp4")
    q.add_argument("--json-dir", required=True, help="folder holding avqa-{train,val,test}.json, or the release "
                   "folder holding json/ and json_update/")
    q.add_argument("--json-set", choices=("json_update", "json"), default="json_update",
                   help="which question files when --json-dir holds both folders (default: the corrected "
                        "json_update)")
    q.add_argument("--videos", required=True, help="folder of <video_id>.mp4 files")
    build_options(q, min_seconds=1.0, sampling="even", unit="videos")
    q.set_defaults(func=build_musicavqa_cmd)

    r = bs.add_parser("valor", help="from VALOR-32K: desc_{train,val,test}.json (or txt_mapper_en.json + "
                      "{train,test}_id.json) + <video_id>.mp4")
    r.add_argument("--ann-dir", required=True,
                   help="folder holding desc_{train,val,test}.json or VALOR's txt_mapper_en.json")
    r.add_argument("--videos", required=True, help="folder of <video_id>.mp4 files")
    r.add_argument("--val-fraction", type=float, default=0.1,
                   help="VALOR's own layout without val_id.json: share of the train videos held out as val "
                        "(seeded by --order-seed; default 0.1)")
    r.add_argument("--no-text", action="store_true",
                   help="do not save the embedded text model (WordPiece tokenizer + tiny BERT trained on the train "
                        "captions) in OUT/text; runs then name a text model folder or hub name")
    build_options(r, min_seconds=1.0, sampling="even", unit="videos")
    r.set_defaults(func=build_valor_cmd)

    y = bs.add_parser("synth", help="write a synthetic AVE-layout dataset to --root, then build it")
    y.add_argument("--root", required=True, help="folder the synthetic dataset is written to")
    synth_options(y)
    build_options(y)
    y.set_defaults(func=build_synth_cmd)

    s = ss.add_parser("synth", help="write a synthetic AV-event dataset in the AVE layout (mp4 + annotations)")
    s.add_argument("--out", required=True, help="dataset folder to write (then: shards build ave --root OUT)")
    synth_options(s)
    task_synth_options(s)
    s.set_defaults(func=synth_cmd)

    v = ss.add_parser("verify", help="re-hash every shard and recount its samples against the manifest")
    v.add_argument("dir", help="shard folder holding manifest.json")
    v.add_argument("--decode", action="store_true", help="also decode every sample as the loaders do")
    v.set_defaults(func=verify_cmd)

    i = ss.add_parser("inspect", help="print the sample schema, counts per split and the class histogram")
    i.add_argument("dir", help="shard folder holding manifest.json")
    i.add_argument("--json", action="store_true", help="print the manifest (without build records) as JSON")
    i.set_defaults(func=inspect_cmd)


def synth_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clips", type=int, default=480, help="number of clips (default 480)")
    p.add_argument("--seed", type=int, default=0, help="everything follows from this seed")
    p.add_argument("--classes", type=int, default=8, help="event classes (2-8; background is added)")
    p.add_argument("--size", type=int, default=128, help="video side in pixels (default 128)")
    p.add_argument("--fps", type=int, default=4, help="video frame rate (default 4)")
    p.add_argument("--sample-rate", type=int, default=16000, help="audio sample rate (default 16000)")
    p.add_argument("--channels", type=int, choices=(1, 2), default=1, help="audio channels")


def register_submit(what: argparse._SubParsersAction, job_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """``avpea submit shards build ave|synth`` (called by launch.commands with its job options)."""
    shards = what.add_parser("shards", help="build shards split across Slurm tasks (or local processes)")
    build = shards.add_subparsers(dest="shards_command", metavar="SUBCOMMAND", required=True).add_parser(
        "build", help="build shards, each task a share of them; one manifest at the end")
    ds = build.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for name, help_text in (("ave", "from the AVE release layout"), ("synth", "a synthetic AVE-layout dataset")):
        p = ds.add_parser(name, help=help_text)
        if name == "ave":
            p.add_argument("--root", required=True, help="folder of the AVE release")
        else:
            p.add_argument("--root", required=True, help="folder the synthetic dataset is written to")
            synth_options(p)
        build_options(p, workers=0, workers_help="decoding processes per task (default: --cpus-per-task)")
        job_args(p)
        p.set_defaults(func=_submit_build)


def _submit_build(args: argparse.Namespace) -> int:
    from ..launch.shards_job import submit_build

    return submit_build(args)


def build_options(p: argparse.ArgumentParser, workers: int | None = None,
                  workers_help: str = "decoding processes (default: all cores)", min_seconds: float = 8.0,
                  sampling: str | None = None, unit: str = "records") -> None:
    """The options every shard builder shares (`shards build ...` and `submit shards build ...`); the
    per-dataset defaults: shortest video, segment sampling (None: AVE's per-second segments, no option, since
    its labels are per second), what a shard's size counts."""
    p.add_argument("--out", required=True, help="shard folder to write (a rerun resumes it)")
    p.add_argument("--workers", type=int, default=(os.cpu_count() or 1) if workers is None else workers,
                   help=workers_help)
    p.add_argument("--strict", action="store_true", help="exit 1 if any clip was skipped")
    p.add_argument("--shard-size", type=int, default=128, help=f"{unit} per shard (default 128, ~40-60 MB)")
    p.add_argument("--no-audio", choices=("skip", "silence"), default="skip",
                   help="clips without an audio stream: skip them (default) or keep them with silence")
    p.add_argument("--min-seconds", type=float, default=min_seconds,
                   help=f"refuse videos shorter than this (truncated; default {min_seconds:g})")
    if sampling is not None:
        p.add_argument("--sampling", choices=("first", "even"), default=sampling,
                       help=f"segments: the first seconds, one each, or spread evenly over a video of any length "
                            f"(default {sampling})")
    p.add_argument("--order-seed", type=int, default=0,
                   help="seed of the record shuffle before shards are cut (default 0; in the manifest)")
    p.add_argument("--audio-windows", choices=("exact", "linspace"), default="exact",
                   help="segment audio: exact seconds (default) or LAVisH's linspace windows")


def options_from(args: argparse.Namespace, workers: int) -> "BuildOptions":  # noqa: F821
    from ..data.build import BuildOptions

    return BuildOptions(workers=workers, shard_size=args.shard_size, no_audio=args.no_audio,
                        min_seconds=args.min_seconds, order_seed=args.order_seed, audio_windows=args.audio_windows,
                        sampling=getattr(args, "sampling", "first"))


def report(m: dict, out: str, strict: bool) -> int:
    """Print what a finished build holds and every skipped record; -> the exit code."""
    from ..data.verify import summary

    records = sum(s["records"] for s in m["splits"].values())
    print(f"shards in {out}: {summary(m)} from {records} records")
    skipped = [(split, e) for split, s in m["splits"].items() for e in s["skipped"]]
    if skipped:
        print(f"skipped {len(skipped)} clips (listed in manifest.json under splits.*.skipped):")
        for split, e in skipped:
            print(f"  {split:<5} {e['id']}: {e['reason']}")
    for split, e in ((split, e) for split, s in m["splits"].items() for e in s.get("notes", [])):
        print(f"note: {split:<5} {e['id']}: {e['note']}")
    if not any(s["samples"] for s in m["splits"].values()):
        print("error: no clip could be written; check the --root folder and the reasons above", file=sys.stderr)
        return 1
    return 1 if skipped and strict else 0


def build_ave_cmd(args: argparse.Namespace) -> int:
    from ..data.build import build_ave

    m = build_ave(args.root, args.out, options_from(args, args.workers), progress=sys.stderr.isatty())
    st = m["stats"]
    print(f"this run decoded {st['videos_decoded']} videos for {st['clips_processed']} records in "
          f"{st['seconds']:.1f} s, reused {st['reused_shards']} finished shards")
    return report(m, args.out, args.strict)


def report_samples(m: dict, out: str, strict: bool) -> int:
    """Print what a finished musicavqa/valor build holds and its first skipped records; -> the exit code."""
    unit = {"avqa": "questions", "captions": "captions"}[m["schema"]]
    for split, s in m["splits"].items():
        print(f"{split:<5} {s['samples']} videos in {len(s['shards'])} shards, {s[unit]} {unit} written, "
              f"{len(s['skipped'])} of {s['records']} records skipped")
    skipped = [(split, e) for split, s in m["splits"].items() for e in s["skipped"]]
    if skipped:
        print(f"skipped {len(skipped)} records (all in manifest.json under splits.*.skipped); the first ones:")
        for split, e in skipped[:20]:
            qid = f" question {e['question_id']}" if "question_id" in e else ""
            print(f"  {split:<5} {e['id']}{qid}: {e['reason']}")
    if not any(s["samples"] for s in m["splits"].values()):
        print("error: no video could be written; check --videos and the reasons above", file=sys.stderr)
        return 1
    return 1 if skipped and strict else 0


def _stats_line(st: dict) -> str:
    return (f"this run decoded {st['videos_decoded']} videos for {st['clips_processed']} samples in "
            f"{st['seconds']:.1f} s ({st['videos_per_s']:.2f} videos/s), reused {st['reused_shards']} finished shards")


def build_musicavqa_cmd(args: argparse.Namespace) -> int:
    from ..datasets.musicavqa.build import build_musicavqa

    m = build_musicavqa(args.json_dir, args.videos, args.out, options_from(args, args.workers),
                        json_set=args.json_set, progress=sys.stderr.isatty())
    print(_stats_line(m["stats"]))
    print(f"shards in {args.out}: MUSIC-AVQA ({m['json_set']}), {len(m['vocab']['answers'])} answers and "
          f"{len(m['vocab']['words'])} words in the train vocabulary")
    return report_samples(m, args.out, args.strict)


def build_valor_cmd(args: argparse.Namespace) -> int:
    from ..datasets.valor.build import build_valor

    m = build_valor(args.ann_dir, args.videos, args.out, options_from(args, args.workers), text=not args.no_text,
                    val_fraction=args.val_fraction, progress=sys.stderr.isatty())
    print(_stats_line(m["stats"]))
    text = f", text model in {args.out}/{m['text']['folder']}" if "text" in m else ""
    print(f"shards in {args.out}: VALOR ({m['annotations']['layout']} layout){text}")
    return report_samples(m, args.out, args.strict)


def build_synth_cmd(args: argparse.Namespace) -> int:
    from ..launch.shards_job import run_task, synth_source

    opts = options_from(args, args.workers)
    result = run_task("synth", args.root, args.out, opts, synth=synth_source(args), progress=sys.stderr.isatty())
    st = result["stats"]
    print(f"this run decoded {st['videos_decoded']} videos for {st['clips_processed']} records in "
          f"{st['seconds']:.1f} s, reused {st['reused_shards']} finished shards")
    return report(result["manifest"], args.out, args.strict)


def task_synth_options(s: argparse.ArgumentParser) -> None:
    """`shards synth musicavqa|valor`: the embedded sets of the AVQA, retrieval and captioning demos."""
    s.add_argument("dataset", nargs="?", choices=("ave", "musicavqa", "valor"), default="ave",
                   help="layout to write: ave (default), musicavqa (MUSIC-AVQA json/ + videos/) or valor "
                        "(VALOR-32K desc_*.json + videos/); for both --size defaults to 96, --clips to 240")
    s.add_argument("--videos", type=int, default=240, help="musicavqa: number of videos (default 240)")
    s.add_argument("--questions", type=int, default=7, help="musicavqa: distinct questions per video (1-30, default 7)")
    s.add_argument("--instruments", type=int, default=8, help="musicavqa: instrument kinds used (4-8, default 8)")
    s.set_defaults(clips=None, size=None)  # per dataset: see synth_cmd


def synth_cmd(args: argparse.Namespace) -> int:
    if args.dataset != "ave":
        from ..datasets.musicavqa.synth import synth_cmd as avqa_cmd
        from ..datasets.valor.synth import synth_cmd as valor_cmd

        return (avqa_cmd if args.dataset == "musicavqa" else valor_cmd)(args)
    args.clips = 480 if args.clips is None else args.clips
    args.size = 128 if args.size is None else args.size
    from ..datasets.ave.synth import SynthSpec, make_dataset

    spec = SynthSpec(size=args.size, fps=args.fps, sample_rate=args.sample_rate, channels=args.channels)
    counts = make_dataset(args.out, args.clips, seed=args.seed, num_classes=args.classes, spec=spec,
                          progress=sys.stderr.isatty())
    print(f"synthetic AVE-layout dataset in {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
          + f"; next: avpea shards build ave --root {args.out} --out SHARDS_DIR")
    return 0


def verify_cmd(args: argparse.Namespace) -> int:
    from ..data.verify import verify

    faults, notes = verify(args.dir, decode=args.decode)
    for n in notes:
        print(f"note: {n}")
    for f in faults:
        print(f"FAULT: {f}")
    print(f"{args.dir}: {'OK' if not faults else f'{len(faults)} faults'}")
    return 1 if faults else 0


def inspect_cmd(args: argparse.Namespace) -> int:
    import json

    from ..data.manifest import read_manifest
    from ..data.verify import describe

    if args.json:
        m = read_manifest(args.dir)
        m.pop("build", None)
        print(json.dumps(m, indent=2))
    else:
        print(describe(args.dir))
    return 0
