"""Data: AVE-layout datasets (real or synthetic) -> WebDataset shards -> batches on every rank.

Modules, one concern each: ``ave`` (annotation files), ``decode`` (PyAV), ``features`` (fbank, JPEG,
normalisation), ``synth`` (the synthetic AV-event generator), ``build`` (parallel, resumable shard build),
``tario`` (tar writing; hashing, counting tar reading on webdataset stages), ``epoch_plan`` (which samples each
rank and worker reads per epoch), ``train_stream`` (the training stream), ``stream`` (decoding, eval stream),
``loaders`` (DataLoaders over both; the caller passes its task's codec), ``verify`` (verify, inspect).
"""

import multiprocessing as _mp
import os as _os
import threading as _threading
import time as _time
from multiprocessing.context import BaseContext as _BaseContext

# Everything a data worker needs, imported once by the forkserver; workers then start in ~0.1 s.
_PRELOAD = ["avpea_dist.data.stream", "avpea_dist.data.train_stream", "avpea_dist.data.decode", "avpea_dist.data.build"]


def worker_context() -> _BaseContext:
    """The start method of every data worker: forkserver (fork is unsafe with audio/CUDA threads, spawn slow).
    The preload list has no effect once this process's forkserver runs, so every caller sets the same one."""
    ctx = _mp.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def exit_with(pid: int, interval_s: float = 1.0) -> None:
    """In a data worker: exit as soon as process ``pid`` (the training or build process) is gone.

    A forkserver child's parent is the server, not that process, so neither torch's worker watchdog nor
    PR_SET_PDEATHSIG notice when it is killed; and the server waits for its children. Without this, a
    killed run leaves its workers (and their shuffle buffers) behind."""

    def watch() -> None:
        while True:
            _time.sleep(interval_s)
            try:
                _os.kill(pid, 0)
            except ProcessLookupError:
                _os._exit(1)
            except PermissionError:  # alive, owned by someone else (cannot happen for our parent, harmless)
                pass

    _threading.Thread(target=watch, name=f"exit-with-{pid}", daemon=True).start()
