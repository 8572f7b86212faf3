"""`avpea run ...`: questions asked of a run folder. `avpea run samples RUN [--check]`: which samples its steps saw."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="inspect a run folder (which samples its steps saw)",
                       description="Questions asked of a finished or running run folder.")
    what = p.add_subparsers(dest="run_command", metavar="WHAT", required=True)
    s = what.add_parser("samples", help="per epoch: distinct samples / split size / repeats (train.log_samples)",
                        description="Read RUN/samples/epoch_<e>.jsonl (written with train.log_samples=true: one "
                                    "line per optimizer step, the global batch's sample keys) and report per epoch "
                                    "the distinct samples, the train split's size and the repeats. With --check, "
                                    "exit 1 on any repeat or, for a finished epoch, any sample missing beyond the "
                                    "fewer than data.global_batch an epoch leaves over.")
    s.add_argument("run", help="the run folder (train.out)")
    s.add_argument("--check", action="store_true", help="exit 1 on a repeat or a missing sample")
    s.add_argument("--json", action="store_true", help="print the per-epoch rows as JSON")
    s.set_defaults(func=samples_cmd)


def _sampling(run: Path) -> str:
    """The run's ``data.sampling`` (its config.yaml): balanced epochs repeat samples by design."""
    import yaml

    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
        return str((cfg.get("data") or {}).get("sampling", "sequential"))
    except (OSError, yaml.YAMLError, AttributeError):
        return "sequential"


def samples_cmd(args: argparse.Namespace) -> int:
    from ..train.runfolder import RUN_MANIFEST
    from ..train.samples_log import SAMPLES_DIR, check_samples, epoch_files

    run = Path(args.run)
    if not epoch_files(run):
        raise FileNotFoundError(f"{run / SAMPLES_DIR} holds no epoch_<e>.jsonl: the run was not trained with "
                                f"train.log_samples=true (set it, in a new train.out or from the start of a run)")
    try:
        size = int(json.loads((run / RUN_MANIFEST).read_text())["splits"]["train"]["samples"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FileNotFoundError(f"{run / RUN_MANIFEST} (the shards' manifest the run copied) is unreadable "
                                f"({type(e).__name__}: {e}); the train split's size is unknown") from None
    rows = check_samples(run, size, _sampling(run))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            state = "finished" if r["finished"] else "in progress"
            missing = "" if r["missing"] is None else f", {r['missing']} missing"
            print(f"epoch {r['epoch']} ({state}, {r['steps_logged']} steps): {r['distinct']} distinct / "
                  f"{r['split_size']} in the split, {r['repeats']} repeats{missing}"
                  f"{' (balanced sampling: repeats expected)' if r['sampling'] == 'balanced' else ''}"
                  f"{'' if r['ok'] else '  <- PROBLEM'}")
    return 1 if args.check and not all(r["ok"] for r in rows) else 0
