"""Job specs, the generated sbatch script, dry runs and the user errors of `avpea submit` / `avpea sweep`."""

from __future__ import annotations

import json
import re
import sys

import pytest

from avpea_dist.cli import main
from avpea_dist.config_load import load_config
from avpea_dist.launch.executor import JobSpec, parse_time, sbatch_script, submitit_command
from avpea_dist.launch.sweep import SweepSpec, _check_same_sweep, parse_values, run_sweep
from avpea_dist.launch.sweep_points import grid, point_key

TINY = "configs/avel_tiny.yaml"


def directives(script: str) -> dict[str, str]:
    out = {}
    for line in script.splitlines():
        m = re.fullmatch(r"#SBATCH --([\w-]+)(?:=(.*))?", line)
        if m:
            out[m.group(1)] = m.group(2) if m.group(2) is not None else ""
    return out


def test_sbatch_for_4_nodes_x_8_gpus(tmp_path):
    spec = JobSpec(nodes=4, gpus_per_node=8, cpus_per_task=10, time="2-00:00:00", partition="gpu", account="proj",
                   qos="high", constraint="h100", mem="0", job_name="avpea-train", setup=("module load cuda",))
    script = sbatch_script(spec, tmp_path / "%j")
    d = directives(script)
    assert d["nodes"] == "4"
    assert d["ntasks-per-node"] == "8"  # one task per GPU
    assert d["gpus-per-node"] == "8"
    assert d["cpus-per-task"] == "10"
    assert d["time"] == str(48 * 60)
    assert d["signal"] == "USR2@120"  # every task gets the preemption signal 2 min ahead
    assert "requeue" in d
    assert (d["partition"], d["account"], d["qos"], d["constraint"], d["mem"]) == ("gpu", "proj", "high", "h100", "0")
    assert d["job-name"] == "avpea-train"
    assert d["output"] == f"{tmp_path}/%j/%j_0_log.out"
    lines = script.splitlines()
    srun = next(i for i, line in enumerate(lines) if line.startswith("srun "))
    assert lines.index("module load cuda") < lines.index("export OMP_NUM_THREADS=10") < srun
    assert lines[srun].endswith(submitit_command(tmp_path / "%j"))
    assert spec.world_size == 32


def test_cpu_job_has_no_gpu_directive(tmp_path):
    d = directives(sbatch_script(JobSpec(tasks_per_node=2, cpus_per_task=1, time="00:10:00"), tmp_path))
    assert d["ntasks-per-node"] == "2" and "gpus-per-node" not in d and d["time"] == "10"


@pytest.mark.parametrize("text,minutes", [("90", 90), ("01:30:00", 90), ("00:00:01", 1), ("1-02:03:04", 1564)])
def test_parse_time(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("kwargs,needle", [
    (dict(time="1:2"), "--time '1:2' is not a Slurm time limit"),
    (dict(time="00:61:00"), "not a Slurm time limit"),
    (dict(time="00:02:00"), "no room before the preemption signal"),
    (dict(nodes=0), "--nodes must be an integer >= 1"),
    (dict(mem="lots"), "--mem 'lots'"),
    (dict(job_name="a b"), "job name"),
])
def test_job_spec_rejects_bad_input(kwargs, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        JobSpec(**kwargs)


def test_dry_run_prints_script_and_resolved_config(capsys, tmp_path):
    out_dir = tmp_path / "run"
    rc = main(["submit", "train", TINY, f"train.out={out_dir}", "model.bottleneck=48", "--nodes", "4",
               "--gpus-per-node", "8", "--partition", "gpu", "--time", "04:00:00", "--dry-run"])
    text = capsys.readouterr().out
    assert rc == 0
    d = directives(text)
    assert d["nodes"] == "4" and d["ntasks-per-node"] == "8" and d["time"] == "240" and d["partition"] == "gpu"
    assert "# resolved config (32 ranks)" in text
    assert "bottleneck: 48" in text and f"out: {out_dir}" in text
    assert not out_dir.exists()  # nothing submitted, nothing written


@pytest.mark.parametrize("argv,needle", [
    (["--cluster", "local", "--nodes", "2"], "--cluster local runs on this machine only"),
    (["--gpus-per-node", "8", "--tasks-per-node", "2", "--dry-run"], "one task per GPU"),
    (["--time", "soon", "--dry-run"], "--time 'soon'"),
    (["model.bottleneck=-1", "--dry-run"], "model.bottleneck=-1"),
    (["model.bottlenek=4", "--dry-run"], "did you mean 'model.bottleneck'"),
])
def test_submit_train_user_errors(capsys, argv, needle):
    assert main(["submit", "train", TINY, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("avpea submit: error:") and needle in err


def test_sweep_axes_and_points():
    assert parse_values("--bottleneck", "16, 32,64") == [16, 32, 64]
    assert parse_values("--lr-adapter", "1e-3,5.0e-4") == [1e-3, 5e-4]
    with pytest.raises(ValueError, match="repeats"):
        parse_values("--bottleneck", "16,16")
    with pytest.raises(ValueError, match="comma-separated"):
        parse_values("--bottleneck", " , ")
    points = grid({"model.bottleneck": [8, 16], "optim.lr_adapter": [0.001]})
    assert points == [{"model.bottleneck": 8, "optim.lr_adapter": 0.001},
                      {"model.bottleneck": 16, "optim.lr_adapter": 0.001}]
    assert point_key(points[0]) == "bottleneck-8__lr_adapter-0.001"
    with pytest.raises(ValueError, match="--scheduler"):
        SweepSpec(axes={"model.bottleneck": [8]}, name="x", scheduler="hyperband")


@pytest.mark.parametrize("argv,needle", [
    (["--axis", "optim.weight_decayy=0,1"], "--axis 'optim.weight_decayy=0,1'"),
    (["--bottleneck", "16", "--axis", "model.bottleneck=8"], "already swept"),
    (["model.adapter_heads=4", "--bottleneck", "10"], "sweep point {'model.bottleneck': 10}"),
    ([], "at least one axis"),
])
def test_sweep_user_errors_before_ray_starts(capsys, tmp_path, argv, needle):
    assert main(["sweep", TINY, *argv, "--root", str(tmp_path)]) == 2
    assert needle in capsys.readouterr().err
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()


def test_rerun_with_other_axes_is_refused(tmp_path):
    cfg = load_config(TINY)
    spec = SweepSpec(axes={"model.bottleneck": [8, 16]}, name="s", root=str(tmp_path))
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "sweep.json").write_text(json.dumps({"axes": {"model.bottleneck": [8]}, "base": {}}))
    with pytest.raises(ValueError, match="started with other axes"):
        run_sweep(cfg, spec)
    _check_same_sweep(tmp_path / "nothing", {"axes": {}, "base": {}})  # a new sweep: nothing to compare


def test_submit_sweep_dry_run_asks_one_task_per_node(capsys, tmp_path):
    rc = main(["submit", "sweep", TINY, "--bottleneck", "8,16", "--nodes", "2", "--gpus-per-node", "4",
               "--gpus-per-trial", "1", "--time", "02:00:00", "--root", str(tmp_path), "--name", "bn", "--dry-run"])
    text = capsys.readouterr().out
    assert rc == 0
    d = directives(text)
    # one task per node (a Ray node), holding the node's GPUs and a rank's CPUs per GPU
    assert (d["nodes"], d["ntasks-per-node"], d["gpus-per-node"], d["cpus-per-task"]) == ("2", "1", "4", "4")
    assert f"{tmp_path}/bn/submitit" in text and "sweep bn over {'model.bottleneck': [8, 16]}" in text
    assert not (tmp_path / "bn").exists()
