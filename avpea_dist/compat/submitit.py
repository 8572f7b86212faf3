"""submitit internals: the job loader's module, the sbatch renderer, the job error types; and the
preemption signal from its public setting.

Import the functions (``from ..compat.submitit import ...``), never this module as a bare ``submitit``.
"""

from __future__ import annotations

import os
import shlex
import signal
from pathlib import Path
from typing import Any

DIST = "submitit"
CHECKED = ">=1.5,<1.6"
VERIFIED = "1.5.4"

SUBMIT_MODULE = "submitit.core._submit"
"""The module every task of a submitit job runs (``python -u -m submitit.core._submit FOLDER``): it unpickles
the job and runs it. Spelled as submitit's executors spell it (``_submitit_command_str``), which has no
public accessor and on Slurm needs ``srun`` on PATH to build an executor at all."""

PREEMPT_SIGNAL_VAR = "SUBMITIT_PREEMPT_SIGNAL"
"""submitit's public setting of the signal Slurm sends before a preemption or the time limit (default USR2)."""


def job_command(python: str, folder: str | Path) -> str:
    """The command every task of a job in ``folder`` runs: submitit's loader of the pickled job."""
    return " ".join([python, "-u -m", SUBMIT_MODULE, shlex.quote(str(folder))])


def sbatch_text(command: str, folder: str | Path, **parameters: Any) -> str:
    """The sbatch file submitit writes for ``parameters`` (SlurmExecutor's names: job_name, time, nodes...).

    Reaches ``submitit.slurm.slurm._make_sbatch_string``, the exact generator ``SlurmExecutor.submit`` uses.
    Dry runs and tests show the script without Slurm installed, and a SlurmExecutor (the public way to get
    the text, through its own private ``_make_submission_file_text``) refuses to exist without ``srun``.
    """
    from submitit.slurm.slurm import _make_sbatch_string

    return _make_sbatch_string(command=command, folder=folder, **parameters)


def preempt_signal(job_env: Any = None) -> signal.Signals:
    """The signal submitit's handler requeues on: ``SIG`` + ``USR_SIG`` of the job environment's class.

    ``USR_SIG`` is the public class attribute submitit fills from SUBMITIT_PREEMPT_SIGNAL when it is imported
    (``JobEnvironment._usr_sig()`` makes the same lookup, privately). Reading the attribute rather than the
    variable keeps the two equal where the variable changed after that import, and ``job_env`` (the running
    job's ``submitit.JobEnvironment()``) honours a cluster plug-in that sets its own.
    """
    from submitit import JobEnvironment

    usr_sig = type(job_env).USR_SIG if job_env is not None else JobEnvironment.USR_SIG
    name = "SIG" + usr_sig
    if not hasattr(signal.Signals, name):
        raise ValueError(f"{PREEMPT_SIGNAL_VAR}={os.environ.get(PREEMPT_SIGNAL_VAR, usr_sig)!r} names no "
                         f"signal; unset it or give a name such as USR2")
    return signal.Signals[name]


def job_error_types() -> tuple[type[Exception], type[Exception]]:
    """``(UncompletedJobError, FailedJobError)``: what ``Job.result()`` raises for a job that did not finish,
    and its subclass for one that failed. submitit re-exports neither from its top level; they live in
    ``submitit.core.utils``."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    return UncompletedJobError, FailedJobError
