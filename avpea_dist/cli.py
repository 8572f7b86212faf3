"""The `avpea` command: parses arguments and dispatches; the work lives in the subpackages.

Each area registers its own subcommands (``register(subparsers)``) so this file stays a table of
contents: the core areas below (model-info; shards ...; train, eval, demo; predict; submit, sweep), then
each task's own commands (``avpea search``...), named by its TaskSpec. Registering imports no torch:
``avpea --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import plugins
from .runtime import startup
from .config import ConfigError

AREAS = ("avpea_dist.apps.model_info", "avpea_dist.apps.shards", "avpea_dist.apps.train_commands",
         "avpea_dist.apps.run_commands",
         "avpea_dist.launch.commands")
"""The core areas, in the order ``avpea --help`` lists them."""


def command_modules() -> tuple[str, ...]:
    """The core areas, then every task's command modules (tasks in name order): what ``build_parser`` imports."""
    tasks = plugins.task_specs()
    return AREAS + tuple(m for name in sorted(tasks) for m in tasks[name].commands)


def version() -> str:
    """The installed distribution's version ('unknown' when running from a tree that was never installed)."""
    from importlib.metadata import PackageNotFoundError, version as dist_version

    try:
        return dist_version("avpea-dist")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avpea", description="AV-PEA adapters on frozen ViTs: data, training, "
                                     "evaluation, Slurm and Ray Tune.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in command_modules():
        module = importlib.import_module(name)
        if not callable(getattr(module, "register", None)):
            raise ConfigError(f"{name} is listed as a command module but defines no register(subparsers); "
                              f"add one or drop it from its TaskSpec's commands")
        module.register(sub)
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
