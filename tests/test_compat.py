"""The private names of dependencies (avpea_dist/compat/): the installed releases lie in the checked ranges,
every name still exists and behaves as the call sites assume (each is exercised on a small real object),
and no module outside avpea_dist/compat/ spells one itself.

A failure here after an upgrade names the compat function to re-check; fix it there, not at its callers.
"""

from __future__ import annotations

import ast
import datetime
import importlib
import inspect
import signal
import sys
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from avpea_dist.compat import deepspeed as cds
from avpea_dist.compat import submitit as csub
from avpea_dist.compat import timm as ctimm
from avpea_dist.compat import torch as ctorch

COMPAT = (cds, csub, ctimm, ctorch)
PACKAGE = Path(__file__).resolve().parents[1] / "avpea_dist"


def _functions(module) -> list[str]:
    return [n for n, f in inspect.getmembers(module, inspect.isfunction) if f.__module__ == module.__name__]


@pytest.mark.parametrize("module", COMPAT, ids=lambda m: m.DIST)
def test_installed_release_lies_in_the_checked_range(module):
    installed = Version(version(module.DIST))
    assert installed in SpecifierSet(module.CHECKED), (
        f"{module.DIST} {installed} is outside {module.__name__}.CHECKED ({module.CHECKED!r}): re-check "
        f"{', '.join(_functions(module))} against it (this file exercises each), then set CHECKED and VERIFIED")
    assert Version(module.VERIFIED) in SpecifierSet(module.CHECKED), f"{module.__name__}.VERIFIED is outside CHECKED"


# torch ------------------------------------------------------------------------------------------------------


def test_default_group_timeout_reaches_new_groups():
    from torch.distributed import distributed_c10d

    before = (distributed_c10d.default_pg_timeout, getattr(distributed_c10d, "default_pg_nccl_timeout", None))
    wanted = datetime.timedelta(seconds=123)
    try:
        ctorch.set_default_group_timeout(wanted)
        # What new_group(timeout=None) uses: if this helper moves, re-check set_default_group_timeout.
        assert distributed_c10d._get_default_timeout("gloo") == wanted
        if isinstance(before[1], datetime.timedelta):
            assert distributed_c10d._get_default_timeout("nccl") == wanted
    finally:
        distributed_c10d.default_pg_timeout = before[0]
        if before[1] is not None:
            distributed_c10d.default_pg_nccl_timeout = before[1]


def test_scheduler_bookkeeping():
    param = torch.nn.Parameter(torch.zeros(1))
    sched = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([param], lr=0.5), lambda step: 1.0 / (step + 1))
    for _ in range(2):
        sched.optimizer.step()
        sched.step()
    # A state dict of the configured schedule (fresh, position 0) takes the live position, and loading it
    # keeps that position: what resume does.
    fresh = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([param], lr=0.5), lambda step: 1.0 / (step + 1))
    state = ctorch.scheduler_state_at_live_position(sched, fresh.state_dict())
    assert set(state) == set(fresh.state_dict()), "re-check scheduler_state_at_live_position: the keys moved"
    assert (state["last_epoch"], state["_step_count"]) == (2, 3)
    fresh.load_state_dict(state)
    assert fresh.state_dict()["_step_count"] == 3 and fresh.last_epoch == 2
    ctorch.set_scheduler_last_lr(sched, [0.125])
    assert sched.get_last_lr() == [0.125]
    assert sched.last_epoch == 2  # the schedule's position did not move


# timm -------------------------------------------------------------------------------------------------------


def test_vit_pos_embed_prepends_the_class_token_and_adds_positions():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=16, embed_dim=24, depth=1, num_heads=2, num_classes=0).eval()
    with torch.no_grad():
        vit.pos_embed.normal_()
        tokens = vit.patch_embed(torch.randn(2, 3, 32, 32))
        out = ctimm.vit_pos_embed(vit, tokens)
    assert out.shape == (2, 1 + tokens.shape[1], 24)
    torch.testing.assert_close(out[:, 1:], tokens + vit.pos_embed[:, 1:])
    torch.testing.assert_close(out[:, 0], (vit.cls_token + vit.pos_embed[:, :1])[:, 0].expand(2, -1))


# DeepSpeed --------------------------------------------------------------------------------------------------


def test_checkpoint_types_exist_and_load_safely(tmp_path):
    types = cds.checkpoint_safe_types(strict=True)
    assert [t.__name__ for t in types] == [name for _, name in cds.CHECKPOINT_TYPES]
    by_name = {t.__name__: t for t in types}
    state = {"stage": by_name["ZeroStageEnum"](1), "scaler": by_name["LossScaler"](1.0),
             "where": by_name["fragment_address"](numel=4, start=0), "w": torch.ones(2)}
    torch.save(state, tmp_path / "s.pt")
    with torch.serialization.safe_globals(types):
        back = torch.load(tmp_path / "s.pt", weights_only=True)
    assert back["stage"] == state["stage"] and back["where"].numel == 4 and back["scaler"].cur_scale == 1.0


def test_checkpoint_engine_and_engine_config(tmp_path):
    import deepspeed
    from deepspeed.runtime.config import DeepSpeedConfig

    from avpea_dist.runtime import world

    base = cds.torch_checkpoint_engine()
    for method, params in (("save", ["state_dict", "path"]), ("load", ["path", "map_location"]),
                           ("makedirs", ["path", "exist_ok"])):
        got = list(inspect.signature(getattr(base, method)).parameters)[1:]
        assert got == params, f"{base.__name__}.{method}{got}: re-check torch_checkpoint_engine and its subclass"
    ckpt = base(None)
    ckpt.save({"w": torch.arange(3)}, str(tmp_path / "w.pt"))
    assert torch.equal(ckpt.load(str(tmp_path / "w.pt"))["w"], torch.arange(3))

    world.init_process_group(world.world_info_from_env(), "gloo", 60)
    try:
        model = torch.nn.Linear(2, 2)
        engine = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                      config={"train_batch_size": 1, "zero_optimization": {"stage": 0}},
                                      dist_init_required=False)[0]
        config = cds.engine_config(engine)
        assert isinstance(config, DeepSpeedConfig) and config.train_batch_size == 1
        # DeepSpeed built its own engine from the same config, of the class we subclass.
        assert isinstance(engine.checkpoint_engine, base)
        # init_process_group made its timeout the default of groups created later (DeepSpeed's among them).
        from torch.distributed import distributed_c10d

        assert distributed_c10d._get_default_timeout("gloo") == datetime.timedelta(seconds=60)
    finally:
        world.teardown()
    assert not torch.distributed.is_initialized()
    assert not sys.modules["deepspeed.comm"].is_initialized()  # teardown went through DeepSpeed's destroy


# submitit ---------------------------------------------------------------------------------------------------


def test_job_command_is_submitits(tmp_path):
    from submitit.local.local import LocalExecutor
    from submitit.slurm.slurm import SlurmExecutor

    assert importlib.util.find_spec(csub.SUBMIT_MODULE) is not None
    for executor in (SlurmExecutor, LocalExecutor):
        theirs = executor._submitit_command_str.fget(SimpleNamespace(python="/py thon", folder=tmp_path / "a b"))
        assert csub.job_command("/py thon", tmp_path / "a b") == theirs, f"{executor.__name__}: re-check job_command"


def test_sbatch_text_takes_every_parameter_we_pass(tmp_path):
    from avpea_dist.launch.executor import JobSpec, slurm_parameters

    spec = JobSpec(nodes=2, gpus_per_node=1, partition="p", account="a", qos="q", constraint="c", mem="1G",
                   setup=("module load x",))
    params = slurm_parameters(spec)
    from submitit.slurm.slurm import _make_sbatch_string

    accepted = set(inspect.signature(_make_sbatch_string).parameters)
    assert set(params) <= accepted, f"re-check sbatch_text: no longer accepted: {sorted(set(params) - accepted)}"
    text = csub.sbatch_text("CMD", tmp_path, **params)
    assert text.startswith("#!/bin/bash")
    for line in ("#SBATCH --nodes=2", "#SBATCH --partition=p", "#SBATCH --requeue", "module load x", "CMD"):
        assert line in text, f"{line!r} missing from the sbatch text: re-check sbatch_text"
    assert f"#SBATCH --signal={csub.preempt_signal().name[3:]}@{spec.signal_delay_s}" in text


def test_preempt_signal_matches_submitits_handler(monkeypatch):
    import submitit
    from submitit.local.local import LocalJobEnvironment
    from submitit.slurm.slurm import SlurmJobEnvironment

    assert csub.preempt_signal() == submitit.JobEnvironment._usr_sig()
    for env in (SlurmJobEnvironment, LocalJobEnvironment):
        monkeypatch.setattr(env, "USR_SIG", "USR1")
        job_env = object.__new__(env)
        assert csub.preempt_signal(job_env) == signal.SIGUSR1 == job_env._usr_sig()
    monkeypatch.setattr(submitit.JobEnvironment, "USR_SIG", "NOPE")
    with pytest.raises(ValueError, match=csub.PREEMPT_SIGNAL_VAR):
        csub.preempt_signal()


def test_job_error_types():
    import submitit.core.core

    uncompleted, failed = csub.job_error_types()
    assert issubclass(failed, uncompleted) and issubclass(uncompleted, Exception)
    # Job.result raises them by these names; if that changes, re-check job_error_types.
    source = inspect.getsource(submitit.core.core.Job)
    assert "UncompletedJobError" in source and "FailedJobError" in source


# no private name outside compat/ ----------------------------------------------------------------------------

DEPENDENCIES = ("torch", "deepspeed", "submitit", "timm", "ray", "webdataset", "safetensors")
INTERNAL_MODULES = ("torch.distributed.distributed_c10d", "submitit.core", "submitit.slurm", "submitit.local",
                    "deepspeed.runtime", "deepspeed.utils", "deepspeed.comm.comm")
REACHED = ("_config", "_step_count", "_last_lr", "_pos_embed", "_usr_sig", "_make_sbatch_string",
           "_submitit_command_str")


def _private_uses(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        modules: list[str] = []
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        for m in modules:
            parts = m.split(".")
            if parts[0] in DEPENDENCIES and (any(p.startswith("_") and not p.startswith("__") for p in parts)
                                            or any(m == i or m.startswith(i + ".") for i in INTERNAL_MODULES)):
                found.append(f"{path.relative_to(root)}:{node.lineno}: import {m}")
        if isinstance(node, ast.Attribute) and node.attr in REACHED and not (
                isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            found.append(f"{path.relative_to(root)}:{node.lineno}: .{node.attr}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and (node.value in REACHED or any(
                i in node.value for i in INTERNAL_MODULES + ("submitit.core._submit",))):
            found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value!r}")
    return found


def test_no_private_dependency_name_outside_compat():
    found = [use for path in sorted(PACKAGE.rglob("*.py")) if "compat" not in path.relative_to(PACKAGE).parts
             for use in _private_uses(path)]
    assert not found, "private names of dependencies belong in avpea_dist/compat/:\n" + "\n".join(found)


def test_the_scan_sees_a_private_use(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text("from submitit.slurm.slurm import _make_sbatch_string\nx = vit._pos_embed(t)\n"
                    "c = 'python -m submitit.core._submit'\nfrom torch.distributed import distributed_c10d\n"
                    "y = self._config\nimport torch.nn.functional\ns = {'_step_count': 1}\n")
    lines = {int(use.split(":")[1]) for use in _private_uses(path, tmp_path)}
    assert lines == {1, 2, 3, 4, 7}


@pytest.mark.slow
def test_deepspeed_loads_without_importing_mlflow_and_mlflow_still_imports_after():
    """compat.deepspeed.load keeps DeepSpeed's autotuner from importing mlflow (1.45 s of every rank's
    start-up); our own tracker's later `import mlflow` still works when it is installed."""
    import os
    import subprocess

    code = ("import sys\nfrom avpea_dist.compat.deepspeed import load\nds = load()\n"
            "print('mlflow' in sys.modules, sys.modules['deepspeed'] is ds)\n"
            "import importlib.util\nif importlib.util.find_spec('mlflow'):\n    import mlflow\n"
            "print('mlflow' in sys.modules or importlib.util.find_spec('mlflow') is None)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DS_ACCELERATOR": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "True", "True"], out.stdout
