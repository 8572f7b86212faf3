"""The package as a user installs it: a wheel in a fresh virtual environment runs the shipped configs.

The venv is made with ``--system-site-packages`` so torch, DeepSpeed and the rest come from the machine
(no network in CI); the wheel goes in with ``--no-deps``. The test checks that ``avpea_dist`` is imported
from the venv's site-packages, not from this checkout (which is also installed, editable), and runs from a
folder outside the checkout so the repository's configs/ cannot be found by accident.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p


def test_installed_wheel_runs_the_shipped_configs(tmp_path, synth_shards):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu",
               HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    # Build from a copy of what the wheel is made of: an in-tree build/ folder could carry stale modules.
    src = tmp_path / "src"
    for name in ("avpea_dist", "configs"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, src / name)
    wheels = tmp_path / "wheels"
    # No build isolation: the build backend (setuptools) comes from this machine, as the other packages do.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
          str(src)], tmp_path, env)
    (wheel,) = wheels.glob("avpea_dist-*.whl")
    # Every package folder of the checkout is in the wheel (setup.py finds them: a new task or dataset
    # package ships by being there), and so is every shipped config.
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = sorted(str(p.parent.relative_to(REPO)) for p in (REPO / "avpea_dist").rglob("__init__.py")
                      if "__pycache__" not in p.parts)
    missing = [p for p in packages if f"{p}/__init__.py" not in names]
    assert len(packages) > 10 and not missing, f"packages left out of the wheel: {missing}"
    configs = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
    missing = [c for c in configs if f"avpea_dist/configs/{c}" not in names]
    assert configs and not missing, f"configs left out of the wheel: {missing}"

    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(tmp_path / "venv")
    py = tmp_path / "venv" / "bin" / "python"
    avpea = tmp_path / "venv" / "bin" / "avpea"
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)], tmp_path, env)

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run([str(py), "-c", "import avpea_dist, sys; print(avpea_dist.__file__); print(sys.prefix)"], work, env)
    module_file, prefix = where.stdout.split()
    assert module_file.startswith(str(tmp_path / "venv")) and not module_file.startswith(str(REPO)), module_file

    info = _run([str(avpea), "model-info", "avel_tiny", "--json"], work, env)
    assert json.loads(info.stdout)["trainable_params"] > 0

    out = work / "run"
    train = _run([str(avpea), "train", "avel_tiny", f"data.shards={synth_shards}", f"train.out={out}",
                  "model.img_size=32", "train.steps=2", "train.eval_every=2", "train.ckpt_every=2",
                  "eval.batch_size=4", "train.progress=false"], work, env)
    result = json.loads(train.stdout.strip().splitlines()[-1])
    assert result["status"] == "finished" and result["step"] == 2, train.stdout[-2000:]
    assert (out / "best" / "adapters.safetensors").is_file()
