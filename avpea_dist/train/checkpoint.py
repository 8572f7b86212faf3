"""Resumable checkpoints: DeepSpeed state of the trainable parameters, hashed, complete or ignored.

Layout under ``RUN/checkpoints``::

    step_00000300/            one folder per checkpoint (tag)
        mp_rank_00_model_states.pt            DeepSpeed: trainable weights, scheduler, (ZeRO-0) optimizer
        zero_pp_rank_R_mp_rank_00_optim_states.pt   DeepSpeed ZeRO-1/2: rank R's optimizer partition
        trainable.safetensors the same trainable state consolidated by parameter name (rank 0; see
                              elastic.py): what a resume at another world size or ZeRO stage loads
        rank_R.json           our loop state of rank R (step, data position, skip counters)
        rank_R_rng.safetensors                rank R's torch RNG states
        manifest.json         written last, by rank 0, after a barrier: every file's sha256 and the
                              settings the checkpoint is bound to (see resume.py)
    latest                    the newest complete tag, replaced atomically after the manifest

A folder is *complete* only once its manifest exists and every hash in it matches; resume takes the
newest complete one, so a crash at any point of a save leaves the previous checkpoint in charge.
Frozen backbone weights are never saved (``exclude_frozen_parameters``): they come back from
``model.pretrained`` and the seed. On load, the learning-rate schedule keeps its position (the step)
but takes its shape (peak rates, warm-up, total, floor) and AdamW's hyper-parameters from the current
config, not from the checkpoint. Every file is written through ``avpea_dist.fileio.atomic_open`` and read
with ``torch.load(weights_only=True)``: DeepSpeed's own engine would unpickle with ``weights_only=False``.
A save shows every file it writes, every barrier it enters and every old checkpoint it prunes to the run's
``TrainHooks`` (where the fault tests tear files, kill ranks and fill the disk).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist

from ..compat.deepspeed import engine_config, torch_checkpoint_engine
from ..compat.torch import scheduler_state_at_live_position, set_scheduler_last_lr
from ..fileio import atomic_open, sha256_file
from ..runtime.world import comm_device
from .ckptfolder import MANIFEST, complete_tags, find_resumable, list_tags, read_manifest, tag_for, verify  # noqa: F401
from .elastic import CONSOLIDATED, consolidated_bytes, load_consolidated, merge_loop_states, rank_seed
from .elastic import zero_stage_of as _zero_stage
from .hooks import NO_HOOKS, TrainHooks
from .safeload import CheckpointError, safe_torch_load  # noqa: F401  (CheckpointError re-exported)

log = logging.getLogger(__name__)

@contextlib.contextmanager
def _open(path: Path, hooks: TrainHooks) -> Iterator[Any]:
    """A checkpoint file, written atomically; the hooks see (and may replace) what is written to."""
    with atomic_open(path, "wb") as f:
        yield hooks.checkpoint_file(Path(path), f)


def _write(path: Path, data: bytes, hooks: TrainHooks) -> None:
    with _open(path, hooks) as f:
        f.write(data)


def _write_json(path: Path, obj: Any, hooks: TrainHooks) -> None:
    _write(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode(), hooks)


def _barrier(hooks: TrainHooks) -> None:
    hooks.before_barrier()
    dist.barrier()


def make_checkpoint_engine(config_params: Any = None, hooks: TrainHooks = NO_HOOKS) -> Any:
    """A DeepSpeed checkpoint engine that writes atomically, reports write errors, and loads safely."""
    class SafeCheckpointEngine(torch_checkpoint_engine()):
        def __init__(self, params: Any = None) -> None:
            super().__init__(params)
            self.errors: list[str] = []
            self.codes: list[int] = []
            self.hooks = hooks

        def record(self, path: str, e: OSError) -> None:
            self.errors.append(f"{path}: {e}")
            if e.errno:
                self.codes.append(e.errno)

        def makedirs(self, path: str, exist_ok: bool = False) -> None:
            try:
                os.makedirs(path, exist_ok=exist_ok)
            except OSError as e:
                self.record(path, e)

        def save(self, state_dict: Any, path: str) -> None:
            # Errors are collected, not raised: DeepSpeed's save has barriers after this call, and a rank
            # leaving early would leave the others waiting in them. ``save_checkpoint`` all-reduces them.
            if self.errors:
                return
            try:
                with _open(Path(path), self.hooks) as f:
                    torch.save(state_dict, f)
            except OSError as e:
                self.record(path, e)

        def commit(self, info: Any) -> bool:
            self.hooks.before_barrier()  # DeepSpeed's save waits in its closing barrier right after this
            return super().commit(info)

        def load(self, path: str, map_location: Any = None) -> Any:
            return safe_torch_load(path, map_location=map_location or "cpu")

    return SafeCheckpointEngine(config_params)


def install_checkpoint_engine(engine: Any, hooks: TrainHooks = NO_HOOKS) -> None:
    engine.checkpoint_engine = make_checkpoint_engine(engine_config(engine), hooks)


def _any_rank(flag: bool) -> bool:
    return _max_over_ranks(1 if flag else 0) > 0


def _max_over_ranks(value: int) -> int:
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.int64, device=comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def _errno_of(errors: list[str], codes: list[int]) -> int:
    # An error without an errno still counts: -1 < 0 would lose it in a MAX, so it becomes 1 (EPERM's
    # number, but only "something failed" is read from it when no rank has a real errno).
    return max(codes) if codes else (1 if errors else 0)


def _rank_world() -> tuple[int, int]:
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ---------------------------------------------------------------------------------------------
# Saving


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state()
    return state


def save_checkpoint(engine: Any, root: Path, step: int, loop_state: dict[str, Any],
                    keep: int, protect: set[str] = frozenset(), meta: dict[str, Any] | None = None,
                    hooks: TrainHooks = NO_HOOKS) -> Path:
    """Collective: every rank calls it at the same step. Returns the complete checkpoint folder.
    ``meta`` (plain JSON, rank 0's) goes into the manifest beside the file hashes.

    On an OSError on any rank (a full disk, say) every rank raises ``CheckpointError`` naming the folder;
    the half-written folder is removed and ``latest`` still names the previous checkpoint.
    """
    from safetensors.torch import save as st_save

    rank, world = _rank_world()
    tag = tag_for(step)
    folder = root / tag
    ce = engine.checkpoint_engine
    ce.errors, ce.codes = [], []
    try:
        if rank == 0 and folder.exists():  # a leftover of a save that crashed at this very step
            shutil.rmtree(folder)
    except OSError as e:
        ce.record(str(folder), e)
    try:
        # Every rank enters DeepSpeed's save even after an error (it then writes nothing): its barriers
        # must stay matched across ranks, or the all-reduce below would pair with one of them.
        # The consolidated copy first: its gather is collective and raises no OSError, so every rank
        # reaches it whatever happens to its files below.
        trainable, _ = consolidated_bytes(engine, keep=rank == 0)
        if dist.is_initialized():
            hooks.before_barrier()  # DeepSpeed's save opens with a barrier
        engine.save_checkpoint(str(root), tag=tag, client_state={}, save_latest=False,
                               exclude_frozen_parameters=True)
        if not ce.errors:
            if rank == 0:
                _write(folder / CONSOLIDATED, trainable, hooks)
            del trainable
            _write_json(folder / f"rank_{rank}.json", {"rank": rank, "world_size": world, **loop_state}, hooks)
            _write(folder / f"rank_{rank}_rng.safetensors", st_save(_rng_state()), hooks)
    except OSError as e:
        ce.record(str(folder), e)
    errors = list(ce.errors)
    code = _max_over_ranks(_errno_of(errors, ce.codes))
    if code:
        _discard(folder, rank, hooks)
        raise CheckpointError(_save_failed(root, folder, errors, code))
    if dist.is_initialized():
        _barrier(hooks)  # every rank's files are on disk before rank 0 hashes them
    manifest_error, manifest_code = "", 0
    if rank == 0:
        try:
            files = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
            expected = {f"rank_{r}.json" for r in range(world)}
            if not expected <= set(files):
                raise OSError(f"rank files missing: {sorted(expected - set(files))} (is the folder shared?)")
            _write_json(folder / MANIFEST, {"tag": tag, "step": step, "world_size": world,
                                            "zero_stage": _zero_stage(engine), **(meta or {}),
                                            "files": {n: sha256_file(folder / n) for n in files}}, hooks)
            _write(root / "latest", (tag + "\n").encode(), hooks)
        except OSError as e:
            manifest_error, manifest_code = f"{folder}: {e}", e.errno or 1
    code = _max_over_ranks(manifest_code)
    if code:
        _discard(folder, rank, hooks)
        raise CheckpointError(_save_failed(root, folder, [manifest_error] if manifest_error else [], code))
    if rank == 0:
        prune(root, keep, protect | {tag}, hooks)
    if dist.is_initialized():
        _barrier(hooks)
    return folder


def _discard(folder: Path, rank: int, hooks: TrainHooks) -> None:
    if dist.is_initialized():
        _barrier(hooks)
    if rank == 0:
        shutil.rmtree(folder, ignore_errors=True)


def _save_failed(root: Path, folder: Path, errors: list[str], code: int) -> str:
    latest = (root / "latest").read_text().strip() if (root / "latest").is_file() else None
    kept = f"'latest' still names {root / latest}" if latest else "no earlier checkpoint exists"
    # Every rank names the cause, also a rank whose own writes succeeded (the errno travelled in the MAX).
    detail = "; ".join(errors) if errors else f"another rank failed to write its files: {os.strerror(code)}"
    return (f"could not save checkpoint '{folder}': {detail}. Free space or fix permissions in '{root}' and "
            f"rerun: {kept} and the run resumes from it")


def prune(root: Path, keep: int, protect: set[str], hooks: TrainHooks = NO_HOOKS) -> list[str]:
    """Delete all but the newest ``keep`` complete checkpoints (and ``protect``ed ones); leftovers of
    failed saves older than the newest complete one go too. Never deletes the only complete checkpoint."""
    complete = complete_tags(root)
    if not complete:
        return []
    newest_step = complete[-1][0]
    keep_names = {p.name for _, p in complete[-max(1, keep):]} | set(protect)
    removed = []
    for step, folder in list_tags(root):
        is_complete = read_manifest(folder) is not None
        if folder.name in keep_names or (not is_complete and step > newest_step):
            continue
        # The manifest goes first: a prune cut short leaves an incomplete folder, never a "complete" one
        # with files missing.
        with contextlib.suppress(FileNotFoundError):
            (folder / MANIFEST).unlink()
        hooks.before_prune(folder)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    if removed:
        log.info("pruned checkpoints %s", ", ".join(removed))
    return removed


# ---------------------------------------------------------------------------------------------
# Loading


def load_checkpoint(engine: Any, folder: Path, seed: int = 0) -> dict[str, Any]:
    """Collective: restore engine state, RNG and this rank's loop state from a complete checkpoint folder.

    At the world size and ZeRO stage it was written with, DeepSpeed's files and each rank's RNG states are
    loaded (bit for bit); at any other, the consolidated trainable state (``elastic.py``), the old ranks'
    loop states merged, and torch's RNG seeded from (``seed``, step, rank). Then the returned state holds
    ``extra.world_change``: {"step", "from": {"world_size", "zero_stage"}, "to": {...}} (the run logs it)."""
    problem = verify(folder)
    if problem is not None:
        raise CheckpointError(f"checkpoint '{folder}' is not usable: {problem}; delete it to resume from an "
                              f"older one, or set train.resume=none with a new train.out")
    rank, world = _rank_world()
    try:
        state = _load_local(engine, folder, rank, world, seed)
        failure = ""
    except CheckpointError as e:
        state, failure = {}, str(e)
    # One rank refusing a file must stop all of them now, not leave the others waiting in a collective.
    if _any_rank(bool(failure)):
        raise CheckpointError(failure or f"another rank could not load checkpoint '{folder}' (see its error); "
                                         f"delete the folder to resume from an older one")
    return state


def saved_layout(manifest: dict[str, Any]) -> tuple[int | None, int | None]:
    """(world size, ZeRO stage) a checkpoint was written with; the stage of older manifests from their
    resume signature."""
    stage = manifest.get("zero_stage", (manifest.get("resume") or {}).get("dist.zero_stage"))
    return manifest.get("world_size"), stage


_HYPER = ("betas", "eps", "weight_decay")


def _configured_schedule(engine: Any) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The freshly built scheduler's state and the optimizer groups' hyper-parameters: the current config."""
    sched = getattr(engine, "lr_scheduler", None)
    if sched is None or not hasattr(sched, "lr_lambdas"):
        return None
    groups = [{k: g[k] for k in _HYPER if k in g} for g in sched.optimizer.param_groups]
    return sched.state_dict(), groups


def _follow_config(engine: Any, configured: tuple[dict[str, Any], list[dict[str, Any]]] | None) -> None:
    """Keep the loaded schedule's position; put back the configured shape, rates and AdamW settings.

    LambdaLR's saved state holds its lambdas' fields (warm-up, total, floor) and base rates, and the
    optimizer's saved groups hold lr, betas, eps and weight decay: loaded as they are, a resumed run
    would silently keep the old ones. The rate is recomputed exactly as LambdaLR computes it, so an
    unchanged config resumes bit for bit.
    """
    if configured is None:
        return
    state, hyper = configured
    sched = engine.lr_scheduler
    state = scheduler_state_at_live_position(sched, state)
    sched.load_state_dict(state)
    groups = sched.optimizer.param_groups
    if len(groups) != len(hyper):
        raise CheckpointError(f"the checkpoint's optimizer has {len(groups)} parameter groups, this model "
                              f"{len(hyper)}; the checkpoint belongs to another model: use a new train.out")
    rates = [base * fn(sched.last_epoch) for base, fn in zip(sched.base_lrs, sched.lr_lambdas)]
    for group, settings, lr in zip(groups, hyper, rates):
        group.update(settings)
        group["lr"] = lr
    set_scheduler_last_lr(sched, rates)


def _read_rank_file(folder: Path, name: str, reader: Any) -> Any:
    try:
        return reader(folder / name)
    except Exception as e:  # a damaged or hostile rank file (its manifest may vouch for it): every rank stops
        raise CheckpointError(f"checkpoint '{folder}': '{name}' is unreadable ({type(e).__name__}: {e}); "
                              f"delete the folder to resume from an older one") from None


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _load_local(engine: Any, folder: Path, rank: int, world: int, seed: int) -> dict[str, Any]:
    from safetensors.torch import load_file

    saved_world, saved_stage = saved_layout(read_manifest(folder) or {})
    stage = _zero_stage(engine)
    configured = _configured_schedule(engine)
    if saved_world == world and saved_stage in (None, stage):
        path, _ = engine.load_checkpoint(str(folder.parent), tag=folder.name, load_module_strict=False,
                                         load_optimizer_states=True, load_lr_scheduler_states=True)
        if path is None:
            raise CheckpointError(f"DeepSpeed found no model states in '{folder}'")
        _follow_config(engine, configured)
        state = _read_rank_file(folder, f"rank_{rank}.json", _json)
        rng = _read_rank_file(folder, f"rank_{rank}_rng.safetensors", lambda p: load_file(str(p)))
        torch.set_rng_state(rng["torch_cpu"])
        if "torch_cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["torch_cuda"])
        return state
    if not isinstance(saved_world, int) or not (folder / CONSOLIDATED).is_file():
        raise CheckpointError(f"checkpoint '{folder}' was written by {saved_world} ranks at ZeRO stage {saved_stage} "
                              f"and holds no {CONSOLIDATED} (it predates resuming at another world size); relaunch "
                              f"with {saved_world} ranks and dist.zero_stage={saved_stage}, or start a new train.out")
    load_consolidated(engine, folder / CONSOLIDATED)
    _follow_config(engine, configured)
    states = [_read_rank_file(folder, f"rank_{r}.json", _json) for r in range(saved_world)]
    state = merge_loop_states(states, rank, world)
    torch.manual_seed(rank_seed(seed, int(state.get("step", 0)), rank))
    state.setdefault("extra", {})["world_change"] = {"step": int(state.get("step", 0)),
                             "from": {"world_size": saved_world, "zero_stage": saved_stage},
                             "to": {"world_size": world, "zero_stage": stage}}
    return state
