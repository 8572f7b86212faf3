"""The whole training job as one rank: ``run_training(cfg)``.

Read top to bottom, it is the job: join the process group, open the run folder, build the model and
the DeepSpeed engine, resume from the newest complete checkpoint, loop over steps (evaluating on val,
keeping the best, checkpointing, honouring preemption), test the best model once, export, tear down.
Every cross-rank decision (skip a step, stop for bad data, stop for preemption) is an all-reduce, so
ranks never fall out of step.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from .. import world as avdist
from ..config import Config, ConfigError, RefusedOnRankZero
from ..config_load import dump_yaml
from ..fileio import atomic_write_json, atomic_write_text
from . import preempt
from .checkpoint import (complete_tags, find_resumable, install_checkpoint_engine, load_checkpoint,
                         read_manifest, save_checkpoint, tag_for, verify)
from .data_source import DataSource, ShardData
from .engine import build_engine, resolve_precision
from .evaluate import evaluate
from .export import export_trainable, load_trainable
from .loop import LoopState, TrainingError, all_reduce_, data_position, train_step
from .losses import loss_for
from .metrics import MetricsLog, TrainStats, append_jsonl
from .resume import check_resume, resume_signature, saved_signature

log = logging.getLogger(__name__)

OnEval = Callable[[int, dict[str, Any]], None]


def set_determinism(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def git_revision() -> dict[str, Any]:
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return {"commit": rev, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown (not a git checkout)", "dirty": None}


def _broadcast_int(value: int) -> int:
    t = torch.tensor([value], dtype=torch.int64, device=avdist.comm_device())
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast(t, src=0)
    return int(t.item())


def _choose_resume(cfg: Config, ckpt_root: Path, rank: int, signature: dict[str, Any]) -> Path | None:
    """Rank 0 picks the checkpoint (so every rank loads the same one) and checks that the config may
    resume it, before anything is written; -1 means start afresh."""
    step, error = -1, ""
    if rank == 0:
        mode = cfg.train.resume
        if mode == "none":
            if find_resumable(ckpt_root)[0] is not None:
                error = (f"train.resume=none but '{ckpt_root}' holds checkpoints; choose a new train.out or "
                         f"resume with train.resume=latest")
        elif mode == "latest":
            folder, passed = find_resumable(ckpt_root)
            for reason in passed:
                log.warning("not resuming from %s", reason)
            step = int(folder.name.split("_")[1]) if folder else -1
        else:
            folder = Path(mode)
            problem = verify(folder) if folder.is_dir() else "no such folder"
            if problem:
                error = f"train.resume='{mode}' is not a usable checkpoint folder: {problem}"
            else:
                ckpt_root = folder.parent
                step = int(folder.name.split("_")[1])
        if step >= 0 and not error:
            error = _check_compatible(cfg, ckpt_root / tag_for(step), signature)
    failed = _broadcast_int(1 if error else 0)
    if failed:
        if error:
            raise ConfigError(error)
        raise RefusedOnRankZero("rank 0 refused to resume (its error line says why)")
    step = _broadcast_int(step)
    if step < 0:
        return None
    return (ckpt_root if cfg.train.resume in ("latest", "none") else Path(cfg.train.resume).parent) / tag_for(step)


def _check_compatible(cfg: Config, folder: Path, signature: dict[str, Any]) -> str:
    saved = saved_signature(read_manifest(folder) or {}, Path(cfg.train.out))
    try:
        accepted = check_resume(saved, signature, cfg.train.allow_resume_changes, folder)
    except ConfigError as e:
        return str(e)
    if accepted:
        log.warning("resuming %s with %s (allowed by train.allow_resume_changes): the run now differs from an "
                    "uninterrupted one", folder, "; ".join(accepted))
    return ""


def _write_run_files(cfg: Config, run_dir: Path, world: avdist.WorldInfo, backend: str,
                     weights: dict[str, Any], steps: int) -> None:
    old = run_dir / "config.yaml"
    text = dump_yaml(cfg)
    if old.is_file() and old.read_text() != text:
        atomic_write_text(run_dir / "config.previous.yaml", old.read_text())
        log.warning("the config differs from the one this run folder was started with (kept as "
                    "config.previous.yaml); a resumed run is exact only with the same config")
    atomic_write_text(old, text)
    import deepspeed
    atomic_write_json(run_dir / "run.json", {
        "git": git_revision(), "world_size": world.world_size, "backend": backend,
        "precision": resolve_precision(cfg.dist.precision), "torch": torch.__version__,
        "deepspeed": deepspeed.__version__, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "steps": steps, "backbone_weights": weights})  # carries the loud warning when the backbone is random-init


def run_training(cfg: Config, *, on_eval: OnEval | None = None, data: DataSource | None = None) -> dict[str, Any]:
    """Train, validate, test; returns {'status', 'step', 'best_val_accuracy', 'best_step', 'test_accuracy',
    'run_dir', 'train_seconds'}. ``status`` is 'finished' or 'preempted' (rerun to resume)."""
    info = avdist.world_info_from_env()
    set_determinism(cfg.train.seed, cfg.train.deterministic)
    backend = avdist.init_process_group(info, cfg.dist.backend, cfg.dist.timeout_s)
    previous_handlers: dict[int, object] = {}
    try:
        previous_handlers = preempt.install_handlers(only_default=True)  # a launcher's own handlers win
    except ValueError:  # not the main thread (e.g. inside a Ray actor's worker thread): the caller handles signals
        pass
    ok = False
    try:
        result = _run(cfg, info, backend, on_eval, data)
        ok = True
        return result
    finally:
        preempt.restore_handlers(previous_handlers)
        avdist.teardown(barrier=ok)


def _run(cfg: Config, info: avdist.WorldInfo, backend: str, on_eval: OnEval | None,
         data: DataSource | None) -> dict[str, Any]:
    from ..models.model import build_model

    rank, main = info.rank, info.is_main
    run_dir = Path(cfg.train.out)
    ckpt_root = run_dir / "checkpoints"
    data = data if data is not None else ShardData(cfg, rank, info.world_size)
    g = cfg.optim.grad_accum
    steps = cfg.train.total_steps(data.epoch_batches, g)
    if cfg.train.epochs > 0:
        log.info("train.epochs=%d: %d optimizer steps (%d batches per rank per epoch, grad_accum %d); "
                 "train.steps is not used", cfg.train.epochs, steps, data.epoch_batches, g)
    signature = resume_signature(cfg, info.world_size, getattr(data, "manifest", None))
    resume_from = _choose_resume(cfg, ckpt_root, rank, signature)
    torch.manual_seed(cfg.train.seed)  # the frozen random-init backbone must be identical across restarts
    model = build_model(cfg.model)
    if main:
        _write_run_files(cfg, run_dir, info, backend, model.weights_report, steps)
    # The engine's schedule runs over the resolved length (train.epochs may have set it); the engine also
    # stores the frozen backbone in bf16 when training in bf16.
    engine, scheduler = build_engine(model, dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps)))
    install_checkpoint_engine(engine)
    if cfg.model.compile:
        engine.compile()  # in place: the module, its state-dict names and checkpoints stay the same
    device = engine.device
    state = LoopState()
    if resume_from is not None:  # restores the RNG states too
        state = LoopState.from_dict(load_checkpoint(engine, resume_from))
        log.info("rank %d resumed from %s (step %d)", rank, resume_from, state.step)
    else:
        torch.manual_seed(cfg.train.seed * 1000 + rank)  # each rank its own stream for anything random

    clips_per_step = cfg.data.batch_size * g * info.world_size
    metrics = MetricsLog(run_dir, main, state.step if resume_from else None, steps, cfg.train.progress,
                         clips_per_step)
    last_saved = state.step if resume_from else -1
    best_path = run_dir / "best" / "adapters.safetensors"
    modalities = cfg.model.modalities
    # 'ce' is train_step's own default; another objective travels as loss_fn (contract 6).
    step_options = {} if cfg.train.loss == "ce" else {"loss_fn": loss_for(cfg.train.loss)}
    stats = TrainStats()
    problems: list[str] = state.extra.setdefault("problems", [])
    last_eval: dict[str, Any] = {}

    def checkpoint() -> None:
        nonlocal last_saved
        if last_saved == state.step:
            return
        protect = {tag_for(state.best_step)} if state.best_step is not None else set()
        save_checkpoint(engine, ckpt_root, state.step, state.to_dict(), cfg.train.keep_checkpoints, protect,
                        meta={"resume": signature})
        last_saved = state.step

    def validate() -> None:
        m = evaluate(engine.module, data.eval_batches("val"), device, modalities, cfg.model.num_classes)
        improved = state.best_val_accuracy is None or m["accuracy"] > state.best_val_accuracy
        if improved:
            state.best_val_accuracy, state.best_step = m["accuracy"], state.step
            if main:
                export_trainable(engine.module, best_path, cfg.model, {"step": state.step, "val_accuracy":
                                                                       m["accuracy"]})
        record = {"step": state.step, "split": "val", "accuracy": m["accuracy"], "loss": m["loss"],
                  "segments": m["segments"], "best_val_accuracy": state.best_val_accuracy, "time": time.time(),
                  **_eval_details(m)}
        last_eval.update(record)
        metrics.write(record)
        metrics.message(f"step {state.step}: val accuracy {m['accuracy']:.4f} (best {state.best_val_accuracy:.4f} "
                        f"at step {state.best_step})")
        if main and on_eval is not None:
            on_eval(state.step, record)

    t0 = time.perf_counter()
    status = "finished"
    data_problems = int(all_reduce_(torch.tensor([float(len(problems))]))[0].item())  # a resume's count
    micro = state.extra.get("micro_batches", state.step * g)
    epoch, start = data_position(micro, 1, data.epoch_batches)
    batches = iter(data.train_batches(epoch, start))
    try:
        while state.step < steps:
            group = []
            for _ in range(g):
                batch = next(batches, None)
                if batch is None:  # the virtual epoch is over: the next one reshuffles
                    epoch += 1
                    batches = iter(data.train_batches(epoch, 0))
                    batch = next(batches)
                group.append(batch)
                _note_problems(batch, problems)
            micro += g
            r = train_step(engine, group, device, modalities, **step_options)
            applied = r.applied
            state.bad_samples += r.bad
            state.seen_samples += r.seen
            state.extra["micro_batches"] = micro
            too_bad = state.bad_samples > cfg.data.max_bad_fraction * (state.bad_samples + state.seen_samples)
            flags = all_reduce_(torch.tensor([float(preempt.stop_requested()), float(too_bad), float(len(problems))]))
            data_problems = int(flags[2].item())  # distinct damaged-shard reports, summed over ranks
            if applied:
                state.step += 1
                state.consecutive_skips = 0
                stats.add(r)
                log_now = state.step % cfg.train.log_every == 0 or state.step == steps
                extra = {**stats.flush(), "data_problems": data_problems} if log_now else None
                if log_now and main and hasattr(engine.module, "gate_magnitudes"):
                    extra["gates"] = engine.module.gate_magnitudes()
                metrics.train_step(state.step, r.loss, scheduler.get_last_lr(), epoch, r.data_digest, log_now, extra)
            else:
                state.consecutive_skips += 1
                state.skipped_steps += 1
                metrics.write({"step": state.step, "split": "train", "skipped": True,
                               "consecutive_skips": state.consecutive_skips, "time": time.time()})
                if state.consecutive_skips >= cfg.train.max_skipped_steps:
                    good = complete_tags(ckpt_root)
                    raise TrainingError(
                        f"{state.consecutive_skips} consecutive steps had a non-finite loss or gradient (at step "
                        f"{state.step}); lower optim.lr_adapter/optim.lr_head, keep optim.grad_clip > 0, or check "
                        f"the data. Last good checkpoint: "
                        f"{good[-1][1] if good else 'none yet (in ' + str(ckpt_root) + ')'}")
            if flags[1] > 0:
                raise TrainingError(
                    f"more than {cfg.data.max_bad_fraction:.2%} of the training samples on some rank were corrupt "
                    f"(this rank: {state.bad_samples} of {state.bad_samples + state.seen_samples}); check the "
                    f"shards with `avpea shards verify {cfg.data.shards}` and rebuild them, or raise "
                    f"data.max_bad_fraction")
            if applied and (state.step % cfg.train.eval_every == 0 or state.step == steps):
                validate()
            if applied and (state.step % cfg.train.ckpt_every == 0 or state.step % cfg.train.eval_every == 0):
                checkpoint()
            if flags[0] > 0 and state.step < steps:
                checkpoint()
                status = "preempted"
                metrics.message(f"stopping at step {state.step} ({preempt.stop_reason() or 'another rank'}): "
                                f"checkpoint saved, rerun the same command to resume")
                break
        if status == "finished":
            checkpoint()
    finally:
        metrics.close()
    train_seconds = time.perf_counter() - t0

    test_accuracy, test_details = None, {}
    final_split = cfg.eval.final_split
    if status == "finished":
        if main:
            export_trainable(engine.module, run_dir / "final" / "adapters.safetensors", cfg.model,
                             {"step": state.step})
        if final_split != "none":
            if dist.is_initialized():
                dist.barrier()  # rank 0's best export is on disk
            if best_path.is_file():
                load_trainable(engine.module, best_path, cfg.model)
            m = evaluate(engine.module, data.eval_batches(final_split), device, modalities, cfg.model.num_classes)
            test_accuracy, test_details = m["accuracy"], _eval_details(m)
            if main:
                append_jsonl(run_dir / "metrics.jsonl", {"step": state.step, "split": final_split, "accuracy": m["accuracy"],
                                            "loss": m["loss"], "segments": m["segments"],
                                            "best_step": state.best_step, "time": time.time(), **test_details})
    result = {"status": status, "step": state.step, "best_val_accuracy": state.best_val_accuracy,
              "best_step": state.best_step, "test_accuracy": test_accuracy, "final_split": final_split,
              "run_dir": str(run_dir), "train_seconds": round(train_seconds, 2), "world_size": info.world_size,
              "skipped_steps": state.skipped_steps, "bad_samples": state.bad_samples, "steps": steps,
              "data_problems": data_problems, "val_skipped": last_eval.get("skipped"),
              "val_accuracy_event": last_eval.get("accuracy_event"),
              "val_accuracy_background": last_eval.get("accuracy_background"),
              **{f"{final_split}_{k}": v for k, v in test_details.items()}}
    if main:
        atomic_write_json(run_dir / "result.json", result)
    preempt.clear()
    return result


def _eval_details(m: dict[str, Any]) -> dict[str, Any]:
    """What an evaluation reports beside its accuracy: event vs background segments, skipped samples."""
    return {"accuracy_event": m["accuracy_event"], "accuracy_background": m["accuracy_background"],
            "skipped": m["skipped"]}


def _note_problems(batch: dict[str, Any], seen: list[str]) -> None:
    """Warn once per damaged-shard line a train batch carries (contract 3); ``seen`` is kept in checkpoints."""
    for line in batch.get("problems") or ():
        if line not in seen:
            seen.append(line)
            log.warning("training data: %s", line)
