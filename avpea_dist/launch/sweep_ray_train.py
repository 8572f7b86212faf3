"""A sweep trial on several ranks: Ray Train starts the workers (one per GPU, anywhere in the Ray cluster)
and their process group; each worker runs the same ``run_training`` as every other launcher.

Ray Train's own ``report`` is a barrier all workers must reach, while the training loop evaluates on
every rank but reports from rank 0 only (``on_eval``). So rank 0 forwards its evaluations through a Ray
queue, and the trial, which owns the Tune session, reports them to Tune as they arrive.
"""

from __future__ import annotations

import queue as stdlib_queue
import threading
from pathlib import Path
from typing import Any, Callable


def run_workers(cfg_dict: dict[str, Any], workers: int, use_gpu: bool, cpus_per_worker: int,
                on_eval: Callable[[int, dict[str, Any]], None], storage: Path, name: str) -> dict[str, Any]:
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Empty, Queue

    events = Queue(actor_options={"num_cpus": 0})

    def worker_loop() -> None:
        from avpea_dist.runtime import startup
        from avpea_dist.config_load import config_from_dict
        from avpea_dist.train.run import run_training

        startup.start_process()
        # Ray Train has exported RANK/WORLD_SIZE/LOCAL_RANK and joined the process group already.
        result = run_training(config_from_dict(cfg_dict),
                              on_eval=lambda step, metrics: events.put(("eval", step, metrics)))
        if ray.train.get_context().get_world_rank() == 0:
            events.put(("done", result))

    trainer = TorchTrainer(
        worker_loop,
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                               resources_per_worker={"CPU": cpus_per_worker,
                                                                     **({"GPU": 1} if use_gpu else {})}),
        # A failed trial is retried by Tune (from the run folder), not by a second retry layer here.
        run_config=ray.train.RunConfig(name=name, storage_path=str(storage),
                                       failure_config=ray.train.FailureConfig(max_failures=0)))
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as e:  # re-raised in the trial's thread below
            outcome["error"] = e

    thread = threading.Thread(target=fit, name=f"ray-train-{name}", daemon=True)
    thread.start()
    result = None
    while thread.is_alive() or not events.empty():
        try:
            kind, *payload = events.get(timeout=1)
        except (Empty, stdlib_queue.Empty):
            continue
        if kind == "eval":
            on_eval(*payload)
        else:
            result = payload[0]
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    if result is None:
        raise RuntimeError(f"the {workers} Ray Train workers of trial {name} ended without a result; see their logs")
    return result
