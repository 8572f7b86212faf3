"""The submitit entry point of a training job: one task per rank, preemption-safe, bounded requeues.

How a preemption or time limit plays out (Slurm sends ``--signal=USR2@delay`` to every task):

1. Every task's USR2 handler only sets the training loop's stop flag (``train.preempt``); submitit's
   own handler, which would checkpoint and requeue from inside the signal on rank 0 while the other
   ranks sit in a collective, is set aside.
2. At the next step boundary the ranks all-reduce the flag, all save the same step and
   ``run_training`` returns ``'preempted'``.
3. Only then, outside any signal context and after the collective save, rank 0 calls submitit's
   handler: it pickles ``checkpoint()`` (this object with one more requeue counted, or ``None`` past the
   bound) and requeues the job (``scontrol requeue``; exit code 144 to the local controller). The
   requeued job resumes from the run folder's newest checkpoint.

SIGTERM (scancel, or preemption without a grace signal) also saves, but never requeues.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import submitit
from submitit.helpers import DelayedSubmission

from ..compat.submitit import preempt_signal
from ..runtime import startup
from ..fileio import atomic_write_json
from .executor import node_name

log = logging.getLogger(__name__)

REQUEUE_LOG = "requeues.json"


def _append_requeue(run_dir: Path, event: dict[str, Any]) -> None:
    path = run_dir / REQUEUE_LOG
    events = json.loads(path.read_text()) if path.is_file() else []
    atomic_write_json(path, [*events, event])


class BoundedRequeue(submitit.helpers.Checkpointable):
    """A submitit callable requeued at most ``max_requeues`` times (preemptions and time limits alike)."""

    max_requeues = 5
    requeues = 0

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission | None:
        """Called by submitit's handler on rank 0: resubmit only, never save here (other ranks may be in a
        collective). ``None`` past the bound ends the job with that reason."""
        if self.requeues >= self.max_requeues:
            log.error("requeue limit (%d) reached: the job stops here; its run folder holds the last checkpoint, "
                      "so submitting the same command again resumes it", self.max_requeues)
            return None
        self.requeues += 1
        log.info("requeue %d of at most %d", self.requeues, self.max_requeues)
        return DelayedSubmission(self, *args, **kwargs)


class TrainJob(BoundedRequeue):
    """``run_training`` of one resolved config as one rank of a submitit job."""

    def __init__(self, cfg: dict[str, Any], max_requeues: int = 5) -> None:
        self.cfg = cfg
        self.max_requeues = max_requeues
        self.requeues = 0

    def __call__(self) -> dict[str, Any]:
        from ..config_load import config_from_dict
        from ..runtime import preempt
        from ..train.run import run_training

        startup.setup_logging()  # a task's stdout/stderr become submitit's per-task log files
        job_env = submitit.JobEnvironment()
        usr_sig = preempt_signal(job_env)
        received: list[int] = []

        def on_signal(signum: int, frame: Any) -> None:
            received.append(signum)  # list.append and a flag: both safe inside a handler
            preempt.request_stop(signal.Signals(signum).name)

        submitit_handler = signal.signal(usr_sig, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        # Keep every GPU visible: DeepSpeed selects its device from LOCAL_RANK.
        dist_env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False,
                                                                         overwrite=True)
        startup.start_process()  # accelerator, and this rank's share of the CPUs (LOCAL_WORLD_SIZE is set now)
        cfg = config_from_dict(self.cfg)
        log.info("job %s rank %d/%d (local %d) on %s, master %s:%d, requeue %d of at most %d",
                 job_env.job_id, dist_env.rank, dist_env.world_size, dist_env.local_rank, node_name(),
                 dist_env.master_addr, dist_env.master_port, self.requeues, self.max_requeues)
        result = run_training(cfg)
        requeue = result.get("status") == "preempted" and usr_sig in received
        log.info("rank %d: run %s at step %s%s", dist_env.rank, result.get("status"), result.get("step"),
                 " (requeueing)" if requeue and dist_env.rank == 0 else "")
        if requeue and dist_env.rank == 0:
            _append_requeue(Path(result["run_dir"]), {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "job_id": job_env.job_id, "step": result.get("step"),
                "signal": signal.Signals(usr_sig).name, "requeue": self.requeues + 1,
                "max_requeues": self.max_requeues,
                "action": "requeue" if self.requeues < self.max_requeues else "stop (requeue limit reached)"})
            if callable(submitit_handler):  # submitit's checkpoint_and_try_requeue: pickle, requeue, exit
                _requeue_via(submitit_handler, usr_sig)
        return result


def _requeue_via(submitit_handler: Any, usr_sig: int) -> None:
    """Run submitit's requeue. Slurm ends the job step as soon as it accepts ``scontrol requeue``, and that
    can SIGTERM the ``scontrol`` child before it returns: the requeue happened, so leave as submitit would
    (no result file, which would mark the requeued job as failed), instead of raising its error."""
    try:
        submitit_handler(usr_sig, None)
    except subprocess.CalledProcessError as e:
        if e.returncode != -signal.SIGTERM:
            raise
        log.info("scontrol requeue was ended by the requeue it asked for; leaving this step")
        sys.exit(-1)
