"""The `avpea` command: parses arguments and dispatches; the work lives in the subpackages.

Each area registers its own subcommands (``register(subparsers)``) so this file stays a table of
contents: models (model-info), data (shards ...), train (train, eval, demo), predict, launch (submit, sweep).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .runtime import startup
from .config import ConfigError

_AREAS = ("avpea_dist.apps.model_info", "avpea_dist.apps.shards", "avpea_dist.apps.train_commands",
          "avpea_dist.apps.predict", "avpea_dist.launch.commands",
          "avpea_dist.tasks.retrieval.commands", "avpea_dist.tasks.captioning.commands")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avpea", description="AV-PEA adapters on frozen ViTs: data, training, "
                                     "evaluation, Slurm and Ray Tune.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _AREAS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Dotted overrides may also follow the options (`avpea train CFG --flag x model.bottleneck=64`).
    if extra:
        if not hasattr(args, "overrides") or not all("=" in e and not e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides or []) + extra
    startup.start_process(args.verbose, threads=False)  # a command that starts ranks sets their threads
    try:
        return int(args.func(args) or 0)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        # User errors: one clear line, no traceback (run with -v for one).
        if args.verbose:
            raise
        print(f"avpea {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
