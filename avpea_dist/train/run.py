"""The whole training job as one rank: ``run_training(cfg)``, for any task.

``Trainer`` reads top to bottom as the job: join the process group, build the task from the registry
(checked against the shards), open the run folder, build the model (encoder + the task's head) and the
DeepSpeed engine, resume from the newest complete checkpoint, loop over steps (``step``; ``validate`` on
val keeping the best by the task's selection metric; ``checkpoint``; preemption), ``test`` the best model
once, export, write result.json. Every cross-rank decision (skip a step, stop for bad data, stop for
preemption) is an all-reduce, so ranks never fall out of step. The trainer never looks inside a task:
the task gives the codecs (through the data source), the head, the loss and the evaluation.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from ..config import Config
from ..fileio import atomic_write_json
from ..runtime import preempt
from ..runtime import world as avdist
from ..runtime.collectives import all_reduce_
from .checkpoint import complete_tags, install_checkpoint_engine, load_checkpoint, save_checkpoint, tag_for
from .data_source import DataSource, ShardData
from .engine import build_engine
from .evaluate import evaluate_task, scalars
from .export import export_trainable, load_trainable
from .hooks import NO_HOOKS, TrainHooks
from .loop import DataPosition, LoopState, StepResult, TrainingError, data_position_of, train_step
from .metrics import MetricsLog, TrainStats, append_jsonl
from .resume import resume_signature
from .runfolder import RUN_MANIFEST, copy_text_folder
from .runsetup import absolute_paths, choose_resume, set_determinism, write_run_files
from .samples_log import SamplesLog

log = logging.getLogger(__name__)

OnEval = Callable[[int, dict[str, Any]], None]


def run_training(cfg: Config, *, on_eval: OnEval | None = None, data: DataSource | None = None,
                 hooks: TrainHooks = NO_HOOKS) -> dict[str, Any]:
    """Train, validate, test; returns result.json's dict (see ``Trainer.result``). ``status`` is 'finished'
    or 'preempted' (rerun to resume). ``hooks`` sees (or disturbs) the run at fixed points (``hooks.py``).
    Every path of ``cfg`` is made absolute first: config.yaml records them so, and the run folder works from
    any folder."""
    cfg = absolute_paths(cfg)
    info = avdist.world_info_from_env()
    cfg = with_global_batch(cfg, info.world_size)
    set_determinism(cfg.train.seed, cfg.train.deterministic)
    backend = avdist.init_process_group(info, cfg.dist.backend, cfg.dist.timeout_s)
    previous_handlers: dict[int, object] = {}
    try:
        previous_handlers = preempt.install_handlers(only_default=True)  # a launcher's own handlers win
    except ValueError:  # not the main thread (e.g. inside a Ray actor's worker thread): the caller handles signals
        pass
    ok = False
    try:
        result = Trainer(cfg, info, backend, on_eval, data, hooks).run()
        ok = True
        return result
    finally:
        preempt.restore_handlers(previous_handlers)
        avdist.teardown(barrier=ok)


def with_global_batch(cfg: Config, world_size: int) -> Config:
    """``cfg`` with ``data.global_batch`` resolved, so config.yaml and every checkpoint's resume signature carry
    the run's unit. A config without one (0) keeps the global batch its run folder started with (config.yaml
    records it), so a rerun on another number of ranks continues the same run; a new run takes world x
    data.batch_size x optim.grad_accum. A world size that cannot divide it is refused here, before anything
    starts."""
    from .data_source import batching

    if cfg.data.global_batch == 0 and cfg.train.resume != "none":
        g = _started_global_batch(Path(cfg.train.out))
        if g:
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, global_batch=g))
    g, _, _ = batching(cfg, world_size)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, global_batch=g))


def _started_global_batch(run_dir: Path) -> int:
    """The resolved data.global_batch in a run folder's config.yaml (0: none, or unreadable)."""
    import yaml

    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        return int((saved.get("data") or {}).get("global_batch") or 0)
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return 0


class Trainer:
    """One rank's run, built in ``__init__`` (in the order a seed's numbers depend on), run by ``run``."""

    def __init__(self, cfg: Config, info: avdist.WorldInfo, backend: str, on_eval: OnEval | None,
                 data: DataSource | None, hooks: TrainHooks = NO_HOOKS) -> None:
        from ..tasks.registry import build_task

        self.cfg, self.info, self.on_eval, self.hooks = cfg, info, on_eval, hooks
        self.main = info.is_main
        self.run_dir = Path(cfg.train.out)
        self.ckpt_root = self.run_dir / "checkpoints"
        self.best_path = self.run_dir / "best" / "adapters.safetensors"
        self.data = data if data is not None else ShardData(cfg, info.rank, info.world_size)
        manifest = getattr(self.data, "manifest", None)
        self.task = getattr(self.data, "task", None) or build_task(cfg, manifest)
        # A stand-in data source without a global batch of its own takes the config's layout.
        self.accum = int(getattr(self.data, "grad_accum", cfg.optim.grad_accum))
        self.micro = int(getattr(self.data, "micro_batch", cfg.data.batch_size))
        self.global_batch = int(getattr(self.data, "global_batch", 0) or cfg.data.global_batch
                                or self.micro * self.accum * info.world_size)
        self.steps = cfg.train.total_steps(self.data.epoch_batches, 1)
        if cfg.train.epochs > 0:
            log.info("train.epochs=%d: %d optimizer steps (%d global batches of %d clips per epoch); "
                     "train.steps is not used", cfg.train.epochs, self.steps, self.data.epoch_batches,
                     self.global_batch)
        self.signature = {**resume_signature(cfg, info.world_size, manifest), **self.task.signature()}
        resume_from = choose_resume(cfg, self.ckpt_root, info.rank, self.signature)
        self.build(backend, manifest)
        self.state = self.restore(resume_from)
        self.resumed = resume_from is not None
        self.metrics = MetricsLog(self.run_dir, self.main, self.state.step if self.resumed else None, self.steps,
                                  cfg.train.progress, self.global_batch)
        self.note_world_change()
        self.last_saved = self.state.step if self.resumed else -1
        self.stats = TrainStats()
        self.problems: list[str] = self.state.extra.setdefault("problems", [])
        self.last_eval: dict[str, Any] = {}
        self.data_problems = 0

    def build(self, backend: str, manifest: dict[str, Any] | None) -> None:
        """The model (encoder + the task's head), the run folder's files, the DeepSpeed engine."""
        from ..models.model import build_model

        cfg = self.cfg
        torch.manual_seed(cfg.train.seed)  # the frozen random-init backbone must be identical across restarts
        model = build_model(cfg.model, task=self.task)
        if self.main:
            write_run_files(cfg, self.run_dir, self.info, backend, model.weights_report, self.steps)
            if manifest is not None:  # the run stays usable (load_run) when its shards are gone
                atomic_write_json(self.run_dir / RUN_MANIFEST, manifest)
                copy_text_folder(cfg.data.shards, manifest, self.run_dir)
        # The engine's schedule runs over the resolved length (train.epochs may have set it); the engine also
        # stores the frozen backbone in bf16 when training in bf16.
        # ... and its micro-batch and accumulation are this world size's share of the global batch.
        self.engine, self.scheduler = build_engine(
            model, dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=self.steps),
                                       data=dataclasses.replace(cfg.data, batch_size=self.micro),
                                       optim=dataclasses.replace(cfg.optim, grad_accum=self.accum)))
        install_checkpoint_engine(self.engine, self.hooks)
        if cfg.model.compile:
            self.engine.compile()  # in place: the module, its state-dict names and checkpoints stay the same
        self.device = self.engine.device

    def restore(self, resume_from: Path | None) -> LoopState:
        """The loop state (and engine, RNG states) of the checkpoint chosen by rank 0, or a fresh start."""
        if resume_from is None:
            torch.manual_seed(self.cfg.train.seed * 1000 + self.info.rank)  # each rank its own random stream
            return LoopState()
        loaded = load_checkpoint(self.engine, resume_from, self.cfg.train.seed)  # restores the RNG states too
        self.hooks.after_load(self.engine, resume_from, loaded)
        state = LoopState.from_dict(loaded)
        log.info("rank %d resumed from %s (step %d)", self.info.rank, resume_from, state.step)
        return state

    def note_world_change(self) -> None:
        """The log says when a resume changed the world size or ZeRO stage: from what to what, at which step."""
        change = self.state.extra.pop("world_change", None)
        if not change:
            return
        was, now = change["from"], change["to"]
        self.metrics.write({"step": change["step"], "event": "world_change", "from": was, "to": now,
                            "time": time.time()})
        self.metrics.message(f"resumed at step {change['step']} with another world: {was['world_size']} ranks at "
                             f"ZeRO {was['zero_stage']} -> {now['world_size']} ranks at ZeRO {now['zero_stage']}")

    # ------------------------------------------------------------------------------------------
    # The job

    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            status = self.train()
        finally:
            self.metrics.close()
        train_seconds = time.perf_counter() - t0
        test = self.test() if status == "finished" else None
        result = self.result(status, train_seconds, test)
        if self.main:
            atomic_write_json(self.run_dir / "result.json", result)
        preempt.clear()
        return result

    def train(self) -> str:
        """The step loop; -> 'finished' or 'preempted' (a checkpoint saved). Each step takes one global batch:
        this rank's ``accum`` micro-batches of it."""
        cfg, state, g = self.cfg, self.state, self.accum
        self.data_problems = int(all_reduce_(torch.tensor([float(len(self.problems))]))[0].item())  # a resume's
        epochs = self.data.epoch_batches
        epoch, batch = data_position_of(state, epochs, g).restart(self.global_batch, epochs)
        state.extra.pop("micro_batches", None)  # the old per-rank position; data_position replaces it
        samples = SamplesLog(self.run_dir, cfg.train.log_samples, self.main, epoch, batch)
        batches = self.train_batches(epoch, batch)
        while state.step < self.steps:
            if batch == epochs:  # the virtual epoch is over: the next one reshuffles
                epoch, batch = epoch + 1, 0
                batches = self.train_batches(epoch, 0)
            group = list(itertools.islice(batches, g))
            if len(group) < g:  # a data source that breaks its contract: say so rather than train on less
                raise RuntimeError(f"the training stream of epoch {epoch} ended {g - len(group)} micro-batches "
                                   f"short of global batch {batch} of {epochs}")
            for b in group:
                _note_problems(b, self.problems)
            self.hooks.before_step(self.engine)
            r = train_step(self.engine, group, self.device, self.task.loss, self.hooks)
            self.hooks.after_step(self.engine, r)
            samples.record([k for b in group for k in b.get("key", ())], epoch=epoch, batch=batch,
                           step=state.step + 1, epoch_batches=epochs)
            batch += 1
            state.extra["data_position"] = DataPosition(epoch, batch, self.global_batch).to_dict()
            stop = self.after_step(r, epoch)
            if r.applied and (state.step % cfg.train.eval_every == 0 or state.step == self.steps):
                self.validate()
            if r.applied and (state.step % cfg.train.ckpt_every == 0 or state.step % cfg.train.eval_every == 0):
                self.checkpoint()
            if stop and state.step < self.steps:
                self.checkpoint()
                self.metrics.message(f"stopping at step {state.step} ({preempt.stop_reason() or 'another rank'}): "
                                     f"checkpoint saved, rerun the same command to resume")
                return "preempted"
        self.checkpoint()
        return "finished"

    def train_batches(self, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        """This rank's micro-batches of virtual epoch ``epoch`` from global batch ``start`` on, each shown to the
        hooks with its micro-batch number in the epoch."""
        for index, batch in enumerate(self.data.train_batches(epoch, start), start * self.accum):
            self.hooks.on_batch(epoch, index, batch)
            yield batch

    def after_step(self, r: StepResult, epoch: int) -> bool:
        """Count the step (or the skip), log it, stop on too many skips or too much bad data; -> whether
        some rank asked to stop (preemption)."""
        cfg, state = self.cfg, self.state
        state.bad_samples += r.bad
        state.seen_samples += r.seen
        too_bad = state.bad_samples > cfg.data.max_bad_fraction * (state.bad_samples + state.seen_samples)
        flags = all_reduce_(torch.tensor([float(preempt.stop_requested()), float(too_bad), float(len(self.problems)),
                                          float(r.bad), float(r.seen)], dtype=torch.float64))
        self.data_problems = int(flags[2].item())  # distinct damaged-shard reports, summed over ranks
        totals = state.extra.setdefault("data_totals", {"bad": 0, "seen": 0})  # world-wide: the same on every rank
        totals["bad"] += int(flags[3].item())
        totals["seen"] += int(flags[4].item())
        if r.applied:
            state.step += 1
            state.consecutive_skips = 0
            self.stats.add(r)
            log_now = state.step % cfg.train.log_every == 0 or state.step == self.steps
            extra = {**self.stats.flush(), "data_problems": self.data_problems} if log_now else None
            module = self.engine.module
            if log_now and self.main and hasattr(module, "gate_magnitudes"):
                extra["gates"] = module.gate_magnitudes()
            self.metrics.train_step(state.step, r.loss, self.scheduler.get_last_lr(), epoch, r.data_digest, log_now,
                                    extra)
        else:
            state.consecutive_skips += 1
            state.skipped_steps += 1
            self.metrics.write({"step": state.step, "split": "train", "skipped": True,
                                "consecutive_skips": state.consecutive_skips, "time": time.time()})
            if state.consecutive_skips >= cfg.train.max_skipped_steps:
                good = complete_tags(self.ckpt_root)
                raise TrainingError(
                    f"{state.consecutive_skips} consecutive steps had a non-finite loss or gradient (at step "
                    f"{state.step}); lower optim.lr_adapter/optim.lr_head, keep optim.grad_clip > 0, or check "
                    f"the data. Last good checkpoint: "
                    f"{good[-1][1] if good else 'none yet (in ' + str(self.ckpt_root) + ')'}")
        if flags[1] > 0:
            raise TrainingError(
                f"more than {cfg.data.max_bad_fraction:.2%} of the training samples on some rank were corrupt "
                f"(this rank: {state.bad_samples} of {state.bad_samples + state.seen_samples}); check the "
                f"shards with `avpea shards verify {cfg.data.shards}` and rebuild them, or raise "
                f"data.max_bad_fraction")
        return bool(flags[0] > 0)

    def validate(self) -> None:
        """Evaluate on val; keep (export) the model when the selection metric improved."""
        state, sel = self.state, self.task.selection_metric
        self.hooks.before_eval("val")
        m = evaluate_task(self.task, self.engine.module, self.data.eval_batches("val"), self.device)
        score = m[sel]
        improved = score is not None and (state.best_val_score is None or score > state.best_val_score)
        if improved:
            state.best_val_score, state.best_step = score, state.step
            if self.main:
                export_trainable(self.engine.module, self.best_path, self.cfg.model,
                                 {"step": state.step, f"val_{sel}": score, "task": self.cfg.task},
                                 self.task.signature())
        record = {"step": state.step, "split": "val", **scalars(m), "best_val_score": state.best_val_score,
                  f"best_val_{sel}": state.best_val_score, "time": time.time()}
        self.last_eval = record
        self.metrics.write(record)
        label = self.task.metric_label or sel
        best = "none" if state.best_val_score is None else f"{state.best_val_score:.4f}"
        self.metrics.message(f"step {state.step}: val {label} {_fmt(score)} (best {best} at step {state.best_step})")
        if self.main and self.on_eval is not None:
            self.on_eval(state.step, record)

    def checkpoint(self) -> None:
        if self.last_saved == self.state.step:
            return
        protect = {tag_for(self.state.best_step)} if self.state.best_step is not None else set()
        self.hooks.before_save(self.state.step)
        folder = save_checkpoint(self.engine, self.ckpt_root, self.state.step, self.state.to_dict(),
                                 self.cfg.train.keep_checkpoints, protect, meta={"resume": self.signature},
                                 hooks=self.hooks)
        self.hooks.after_save(self.state.step, folder)
        self.last_saved = self.state.step

    def test(self) -> dict[str, Any] | None:
        """Export the final model; evaluate the best one once on eval.final_split (None: 'none')."""
        if self.main:
            export_trainable(self.engine.module, self.run_dir / "final" / "adapters.safetensors", self.cfg.model,
                             {"step": self.state.step, "task": self.cfg.task}, self.task.signature())
        split = self.cfg.eval.final_split
        if split == "none":
            return None
        if dist.is_initialized():
            dist.barrier()  # rank 0's best export is on disk
        if self.best_path.is_file():
            load_trainable(self.engine.module, self.best_path, self.cfg.model, self.task.signature())
        self.hooks.before_eval(split)
        m = evaluate_task(self.task, self.engine.module, self.data.eval_batches(split), self.device)
        outputs = m.pop("outputs", None)  # a task's per-sample outputs: a file of their own, not result.json
        if self.main and outputs is not None:
            atomic_write_json(self.run_dir / f"outputs_{split}.json", outputs)
        if self.main:
            append_jsonl(self.run_dir / "metrics.jsonl", {"step": self.state.step, "split": split, **scalars(m),
                                                          "best_step": self.state.best_step, "time": time.time()})
        return m

    def result(self, status: str, train_seconds: float, test: dict[str, Any] | None) -> dict[str, Any]:
        """result.json: the task-independent keys, then every task's own under its metric names:
        ``best_val_<metric>``, ``test_<metric>``, ``val_<key>`` (the last validation's scalars) and
        ``<final split>_<key>`` (the final evaluation's scalars; all of it, nested values too, in
        ``test_metrics``)."""
        state, sel, split = self.state, self.task.selection_metric, self.cfg.eval.final_split
        test_score = test[sel] if test else None
        last_val = {k: v for k, v in self.last_eval.items()
                    if k not in ("step", "split", "time", "best_val_score", f"best_val_{sel}")}
        return {
            "task": self.cfg.task, "selection_metric": sel, "status": status, "step": state.step,
            "best_val_score": state.best_val_score, "best_step": state.best_step, "test_score": test_score,
            "final_split": split, "run_dir": str(self.run_dir), "train_seconds": round(train_seconds, 2),
            "world_size": self.info.world_size, "skipped_steps": state.skipped_steps,
            "bad_samples": state.bad_samples, "steps": self.steps, "data_problems": self.data_problems,
            f"best_val_{sel}": state.best_val_score, f"test_{sel}": test_score,
            **{f"val_{k}": v for k, v in last_val.items()},
            **{f"{split}_{k}": v for k, v in scalars(test or {}).items()},
            "test_metrics": test,
        }


def _fmt(value: Any) -> str:
    return "none" if value is None else f"{value:.4f}"


def _note_problems(batch: dict[str, Any], seen: list[str]) -> None:
    """Warn once per damaged-shard line a train batch carries (contract 3); ``seen`` is kept in checkpoints."""
    for line in batch.get("problems") or ():
        if line not in seen:
            seen.append(line)
            log.warning("training data: %s", line)
