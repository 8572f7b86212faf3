"""The `avpea` command: parses arguments and dispatches; the work lives in the subpackages.

Each area registers its own subcommands (``register(subparsers)``) so this file stays a table of
contents: models (model-info), data (shards ...), train (train, eval, demo), launch (submit, sweep).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from .config import ConfigError

_AREAS = ("avpea_dist.models.commands", "avpea_dist.data.commands", "avpea_dist.train.commands",
          "avpea_dist.launch.commands")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avpea", description="AV-PEA adapters on frozen ViTs: data, training, "
                                     "evaluation, Slurm and Ray Tune.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _AREAS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if not _has_cuda_hint():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Dotted overrides may also follow the options (`avpea train CFG --flag x model.bottleneck=64`).
    if extra:
        if not hasattr(args, "overrides") or not all("=" in e and not e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides or []) + extra
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        # User errors: one clear line, no traceback (run with -v for one).
        if args.verbose:
            raise
        print(f"avpea {args.command}: error: {e}", file=sys.stderr)
        return 2


def _has_cuda_hint() -> bool:
    # DeepSpeed picks its accelerator at import; without a GPU driver, CPU is the only sensible one.
    return os.path.exists("/dev/nvidiactl") or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))


if __name__ == "__main__":
    sys.exit(main())
