"""``python -m avpea_dist.train.entry CONFIG [overrides]``: one rank of a training job.

The program torchrun, the deepspeed launcher, ``srun`` and submitit start on every rank; rank, world
size and master address come from their environment variables. Exit codes: 0 finished, 3 preempted
(rerun to resume), 2 a user error (one line on stderr), 1 anything else.
"""

from __future__ import annotations

import json
import logging
import os
import sys


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


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if os.path.exists("/dev/nvidiactl") else "cpu")
    argv = _drop_local_rank(list(sys.argv[1:] if argv is None else argv))
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m avpea_dist.train.entry CONFIG [section.key=value ...]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    from ..config import ConfigError, load_config
    from .checkpoint import CheckpointError
    from .loop import TrainingError
    from .run import RefusedOnRankZero, run_training

    rank = os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))
    try:
        cfg = load_config(argv[0], argv[1:])
        result = run_training(cfg)
    except (ConfigError, ValueError, FileNotFoundError, CheckpointError, TrainingError) as e:
        if not isinstance(e, RefusedOnRankZero):  # rank 0 prints the reason; the others need not repeat it
            print(f"avpea train (rank {rank}): error: {e}", file=sys.stderr, flush=True)
        return 2
    if rank == "0":
        print(json.dumps(result), flush=True)
    return 0 if result["status"] == "finished" else 3


if __name__ == "__main__":
    sys.exit(main())
