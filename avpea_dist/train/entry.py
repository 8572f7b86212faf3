"""``python -m avpea_dist.train.entry CONFIG [overrides]``: one rank of a training job.

The program torchrun, the deepspeed launcher, ``srun`` and submitit start on every rank; rank, world
size and master address come from their environment variables. Exit codes: 0 finished, 3 preempted
(rerun to resume; also after Ctrl-C or the launcher's death: every rank saves the same step), 2 a user error
(one line on stderr), 1 anything else. Under torchrun, ranks other than 0 write their output to
``train.out/logs/rank<R>.log``; the terminal shows rank 0 and every rank's error line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .hooks import TrainHooks


def _drop_local_rank(argv: list[str]) -> list[str]:
    """The deepspeed launcher appends ``--local_rank=N``; LOCAL_RANK in the environment says the same."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--local_rank", "--local-rank"):
            skip = True
        elif not arg.startswith(("--local_rank=", "--local-rank=")):
            out.append(arg)
    return out


def main(argv: list[str] | None = None, hooks: "TrainHooks | None" = None) -> int:
    """One rank's job; ``hooks`` (``hooks.py``; none by default) watch it, e.g. to plant faults."""
    argv = _drop_local_rank(list(sys.argv[1:] if argv is None else argv))
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m avpea_dist.train.entry CONFIG [section.key=value ...]", file=sys.stderr)
        return 2
    from ..runtime import startup
    from ..runtime import preempt

    startup.start_process()
    # From here on Ctrl-C and the scheduler's signals ask for a checkpoint instead of killing the rank.
    preempt.install_handlers(only_default=True)
    if startup.under_torchrun():
        startup.exit_with_parent()
    rank = os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))
    from ..config import ConfigError, RefusedOnRankZero
    from ..config_load import load_config
    from .checkpoint import CheckpointError
    from .loop import TrainingError

    try:  # the one place a training rank turns a user error into one line
        cfg = load_config(argv[0], argv[1:])
        if rank != "0" and startup.under_torchrun():
            # torchrun prints every rank to one terminal: rank 0 speaks, the others write to the run folder.
            startup.quiet_rank(Path(cfg.train.out) / "logs" / f"rank{rank}.log")
        from .hooks import NO_HOOKS
        from .run import run_training

        result = run_training(cfg, hooks=hooks or NO_HOOKS)
    except (ConfigError, ValueError, FileNotFoundError, CheckpointError, TrainingError) as e:
        if not isinstance(e, RefusedOnRankZero):  # rank 0 prints the reason; the others need not repeat it
            who = f" (rank {rank})" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
            print(f"avpea train{who}: error: {e}", file=startup.terminal(), flush=True)
        return 2
    if rank == "0":
        print(json.dumps(result), flush=True)
    return 0 if result["status"] == "finished" else 3


if __name__ == "__main__":
    sys.exit(main())
