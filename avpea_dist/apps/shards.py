"""`avpea shards build <dataset>`, `shards synth [<dataset>]`, `shards verify | inspect`, and `avpea submit shards
build <dataset>`: generated from the dataset registry (``plugins.dataset_specs()``), naming no dataset.

Each dataset's builder adds its release options and its defaults of the shared ones; a synthetic source with a
``build_alias`` adds `shards build <alias>` (write the set, then build it). Builders and sources are imported
only when the parser is made for a command that shows or runs them; heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable

from .. import plugins


def _builders() -> list[tuple[plugins.DatasetSpec, Any]]:
    return [(spec, plugins.load(spec.builder)) for spec in plugins.dataset_specs().values()]


def _synths() -> list[tuple[plugins.DatasetSpec, Any]]:
    return [(spec, plugins.load(spec.synth)) for spec in plugins.dataset_specs().values() if spec.synth]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shards", help="build, verify and inspect WebDataset shards of any registered dataset")
    ss = p.add_subparsers(dest="shards_command", metavar="SUBCOMMAND", required=True)

    b = ss.add_parser("build", help="build shards from a dataset")
    bs = b.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for spec, builder in _builders():
        d = bs.add_parser(spec.name, aliases=list(spec.aliases), help=spec.description or f"shards of {spec.name}")
        builder.add_arguments(d)
        build_options(d, builder)
        d.set_defaults(func=build_cmd, dataset=spec.name)
    for spec, synth in _synths():
        if synth.build_alias:
            builder = plugins.load(spec.builder)
            y = bs.add_parser(synth.build_alias, help=f"write a synthetic {spec.name}-layout dataset to --root, "
                              f"then build it")
            y.add_argument("--root", required=True, help="folder the synthetic dataset is written to")
            synth.add_arguments(y)
            build_options(y, builder)
            y.set_defaults(func=build_synth_cmd, dataset=spec.name)

    _register_synth(ss)

    v = ss.add_parser("verify", help="re-hash every shard and recount its samples against the manifest")
    v.add_argument("dir", help="shard folder holding manifest.json")
    v.add_argument("--decode", action="store_true", help="also decode every sample as the loaders do")
    v.add_argument("--workers", type=int, default=1, help="processes checking shards at once (default 1)")
    v.set_defaults(func=verify_cmd)

    i = ss.add_parser("inspect", help="print the sample schema, counts per split and the class histogram")
    i.add_argument("dir", help="shard folder holding manifest.json")
    i.add_argument("--json", action="store_true", help="print the manifest (without build records) as JSON")
    i.set_defaults(func=inspect_cmd)


def _register_synth(ss: argparse._SubParsersAction) -> None:
    """`shards synth <dataset> --out DIR ...`; `shards synth --out DIR ...` writes the source marked ``default``."""
    synths = _synths()
    default = [(spec, s) for spec, s in synths if s.default]
    if len(default) > 1:
        raise plugins.ConfigError(f"datasets {', '.join(spec.name for spec, _ in default)} each mark their synthetic "
                                  f"set as the default of `shards synth`; at most one may")
    s = ss.add_parser("synth", help="write an embedded synthetic set in a dataset's raw release layout (then: "
                      "shards build <dataset>)")
    s.add_argument("--out", help="dataset folder to write")
    if default:
        default[0][1].add_arguments(s)
    ds = s.add_subparsers(dest="synth_dataset", metavar="DATASET", required=not default)
    s.set_defaults(func=synth_cmd, synth_dataset=default[0][0].name if default else None)  # after: wins over None
    for spec, synth in synths:
        d = ds.add_parser(spec.name, help=f"the {spec.name} release layout")
        d.add_argument("--out", required=True, help="dataset folder to write")
        synth.add_arguments(d)
        d.set_defaults(synth_dataset=spec.name)


def build_options(p: argparse.ArgumentParser, builder: Any, workers: int | None = None,
                  workers_help: str = "decoding processes (default: all cores)") -> None:
    """The options every shard builder shares (`shards build ...` and `submit shards build ...`), with the
    builder's defaults (shortest video; segment sampling, offered only by builders that name it)."""
    defaults = builder.defaults
    min_seconds = defaults.get("min_seconds", 8.0)
    p.add_argument("--out", required=True, help="shard folder to write: new, empty, or holding an earlier build of "
                   "it (a rerun resumes it and rebuilds the shards whose videos changed)")
    p.add_argument("--rebuild", action="store_true", help="remove the earlier build in --out first (its manifest, "
                   "part records and shards; nothing else) and build anew, e.g. with other options")
    p.add_argument("--workers", type=int, default=(os.cpu_count() or 1) if workers is None else workers,
                   help=workers_help)
    p.add_argument("--strict", action="store_true", help="exit 1 if any clip was skipped")
    p.add_argument("--shard-size", type=int, default=128, help=f"{builder.unit} per shard (default 128, ~40-60 MB)")
    p.add_argument("--no-audio", choices=("skip", "silence"), default="skip",
                   help="clips without an audio stream: skip them (default) or keep them with silence")
    p.add_argument("--min-seconds", type=float, default=min_seconds,
                   help=f"refuse videos shorter than this (truncated; default {min_seconds:g})")
    if "sampling" in defaults:
        p.add_argument("--sampling", choices=("first", "even"), default=defaults["sampling"],
                       help=f"segments: the first seconds, one each, or spread evenly over a video of any length "
                            f"(default {defaults['sampling']})")
    p.add_argument("--order-seed", type=int, default=0,
                   help="seed of the record shuffle before shards are cut (default 0; in the manifest)")
    p.add_argument("--audio-windows", choices=("exact", "linspace"), default="exact",
                   help="segment audio: exact seconds (default) or LAVisH's linspace windows")


def options_from(args: argparse.Namespace, workers: int) -> Any:
    """The parsed shared options -> ``BuildOptions``."""
    from ..data.builder import BuildOptions

    return BuildOptions(workers=workers, shard_size=args.shard_size, no_audio=args.no_audio,
                        min_seconds=args.min_seconds, order_seed=args.order_seed, audio_windows=args.audio_windows,
                        sampling=getattr(args, "sampling", "first"))


def _stats_line(st: dict) -> str:
    changed = f", rebuilt {st['changed_shards']} whose videos changed" if st.get("changed_shards") else ""
    return (f"this run decoded {st['videos_decoded']} videos for {st['clips_processed']} samples in "
            f"{st['seconds']:.1f} s ({st['videos_per_s']:.2f} videos/s), reused {st['reused_shards']} finished "
            f"shards{changed}")


def _print_run(m: dict) -> None:
    print(_stats_line(m["stats"]))
    changes = m.get("changes") or []
    for line in changes[:5]:
        print(f"  rebuilt {line}")
    if len(changes) > 5:
        print(f"  ... and {len(changes) - 5} more shards")


def prepare_out(args: argparse.Namespace, clear: bool = True) -> None:
    """Before any build: --out must be new, empty or an earlier build (one line otherwise); --rebuild clears
    that build's own files (unless ``clear`` is False: a dry run)."""
    from ..data.parts import check_out, clear_build

    out = Path(args.out)
    if getattr(args, "rebuild", False) and clear:
        removed = clear_build(out)
        if removed:
            print(f"--rebuild: removed the earlier build in {out} ({len(removed)} files and folders)")
    else:
        check_out(out)


def report(m: dict, out: str, strict: bool, builder: Any = None) -> int:
    """Print what a finished build of any schema holds and its skipped records; -> the exit code."""
    from ..data.sample_build import skip_digest
    from ..data.verify import summary

    print(f"shards in {out}: {summary(m)} from {sum(s['records'] for s in m['splits'].values())} records")
    for line in builder.report_lines(m, out) if builder is not None else ():
        print(line)
    skipped = [(split, e) for split, s in m["splits"].items() for e in s["skipped"]]
    if skipped:
        print(f"skipped {len(skipped)} records (all in manifest.json under splits.*.skipped)"
              + (f": {skip_digest([e for _, e in skipped])}; the first ones:" if len(skipped) > 20 else ":"))
        for split, e in skipped[:20]:
            extra = "".join(f" {k} {v}" for k, v in e.items() if k not in ("id", "key", "reason"))
            print(f"  {split:<5} {e['id']}{extra}: {e['reason']}")
    for split, e in ((split, e) for split, s in m["splits"].items() for e in s.get("notes", [])):
        print(f"note: {split:<5} {e['id']}: {e['note']}")
    shared = m.get("in_several_splits") or []
    if shared:
        first = shared[0]
        print(f"note: {len(shared)} records are listed in more than one split (manifest.json: in_several_splits), "
              f"e.g. {first['id']} in {' and '.join(first['splits'])}")
    if not any(s["samples"] for s in m["splits"].values()):
        print("error: no clip could be written; check the release folders and the reasons above", file=sys.stderr)
        return 1
    return 1 if skipped and strict else 0


def build_cmd(args: argparse.Namespace) -> int:
    builder = plugins.load(plugins.dataset_spec(args.dataset).builder)
    opts = options_from(args, args.workers)
    prepare_out(args)
    m = builder.build(args.out, opts, progress=sys.stderr.isatty(), **builder.source(args))
    _print_run(m)
    return report(m, args.out, args.strict, builder)


def build_synth_cmd(args: argparse.Namespace) -> int:
    spec = plugins.dataset_spec(args.dataset)
    builder, synth = plugins.load(spec.builder), plugins.load(spec.synth)
    root = Path(args.root)
    opts = options_from(args, args.workers)
    prepare_out(args)
    synth.make(root, progress=sys.stderr.isatty(), **synth.options(args))
    m = builder.build(args.out, opts, progress=sys.stderr.isatty(), **synth.source(root))
    _print_run(m)
    return report(m, args.out, args.strict, builder)


def synth_cmd(args: argparse.Namespace) -> int:
    if not args.out:
        print("avpea shards synth: error: --out is required (the dataset folder to write)", file=sys.stderr)
        return 2
    synth = plugins.load(plugins.dataset_spec(args.synth_dataset).synth)
    summary = synth.make(Path(args.out), progress=sys.stderr.isatty(), **synth.options(args))
    print(synth.describe(summary, args.out))
    return 0


def register_submit(what: argparse._SubParsersAction, job_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """``avpea submit shards build <dataset>`` for every dataset (and synthetic build alias); launch.commands
    calls this with its job options."""
    shards = what.add_parser("shards", help="build shards split across Slurm tasks (or local processes)")
    build = shards.add_subparsers(dest="shards_command", metavar="SUBCOMMAND", required=True).add_parser(
        "build", help="build shards, each task a share of them; one manifest at the end")
    ds = build.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    workers_help = "decoding processes per task (default: --cpus-per-task)"
    for spec, builder in _builders():
        p = ds.add_parser(spec.name, aliases=list(spec.aliases), help=spec.description or spec.name)
        builder.add_arguments(p)
        build_options(p, builder, workers=0, workers_help=workers_help)
        job_args(p)
        p.set_defaults(func=_submit_build, dataset=spec.name, synth_alias=None)
    for spec, synth in _synths():
        if synth.build_alias:
            p = ds.add_parser(synth.build_alias, help=f"a synthetic {spec.name}-layout dataset")
            p.add_argument("--root", required=True, help="folder the synthetic dataset is written to")
            synth.add_arguments(p)
            build_options(p, plugins.load(spec.builder), workers=0, workers_help=workers_help)
            job_args(p)
            p.set_defaults(func=_submit_build, dataset=spec.name, synth_alias=synth.build_alias)


def _submit_build(args: argparse.Namespace) -> int:
    from ..launch.shards_job import submit_build

    spec = plugins.dataset_spec(args.dataset)
    builder = plugins.load(spec.builder)
    opts = options_from(args, args.workers or args.cpus_per_task or 1)
    prepare_out(args, clear=not args.dry_run)  # once, before the tasks start: they must not clear each other's work
    if args.synth_alias:
        synth = plugins.load(spec.synth)
        root = Path(args.root).resolve()  # tasks may start elsewhere
        source, synth_options = synth.source(root), (synth.options(args), str(root))
        name = args.synth_alias
    else:
        source, synth_options, name = _absolute(builder.source(args)), None, args.dataset
    manifest, rc = submit_build(args, args.dataset, opts, source, synth_options, what=f"shards build {name}")
    if manifest is None:
        return rc
    return report(manifest, str(args.out), args.strict, builder)


def _absolute(source: dict[str, Any]) -> dict[str, Any]:
    """The source's paths (``Path`` values) made absolute: the tasks may start in another folder."""
    return {k: v.resolve() if isinstance(v, Path) else v for k, v in source.items()}


def verify_cmd(args: argparse.Namespace) -> int:
    from ..data.verify import verify

    faults, notes = verify(args.dir, decode=args.decode, workers=args.workers, progress=True)
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
