"""The `avpea` parser: core areas plus each task's commands from its TaskSpec, built without heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from avpea_dist import cli, plugins
from avpea_dist.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "deepspeed", "ray", "submitit", "timm", "webdataset", "torchvision", "av")


def test_building_the_parser_loads_no_heavy_dependency():
    code = ("import json, sys\nfrom avpea_dist.cli import build_parser\nbuild_parser()\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [], "`avpea --help` must not import these"


def test_every_task_spec_command_module_is_registered():
    modules = cli.command_modules()
    assert modules[: len(cli.AREAS)] == cli.AREAS
    for spec in plugins.task_specs().values():
        assert set(spec.commands) <= set(modules)
    assert not any(m.startswith("avpea_dist.tasks.") for m in cli.AREAS), "task commands come from TaskSpecs"


def _fake_tasks(monkeypatch, tmp_path, body: str) -> None:
    (tmp_path / "fake_task_cmds.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fake_task_cmds", None)
    spec = plugins.TaskSpec(name="fake", task="fake_task_cmds:Nothing", schema="fake-v1", commands=("fake_task_cmds",))
    monkeypatch.setattr(plugins, "task_specs", lambda: {"fake": spec})


def test_a_plugged_in_task_adds_its_command(monkeypatch, tmp_path, capsys):
    _fake_tasks(monkeypatch, tmp_path, "def register(sub):\n"
                                       "    p = sub.add_parser('hello', help='a plug-in command')\n"
                                       "    p.add_argument('--name', default='x')\n"
                                       "    p.set_defaults(func=lambda args: print('hello', args.name))\n")
    args = cli.build_parser().parse_args(["hello", "--name", "av"])
    assert args.command == "hello" and args.name == "av"
    assert cli.main(["hello", "--name", "pea"]) == 0
    assert "hello pea" in capsys.readouterr().out


def test_a_command_module_without_register_is_named(monkeypatch, tmp_path):
    _fake_tasks(monkeypatch, tmp_path, "X = 1\n")
    with pytest.raises(ConfigError, match="fake_task_cmds .*register"):
        cli.build_parser()


def test_version_prints_the_installed_distribution_version():
    from importlib.metadata import version

    p = subprocess.run([sys.executable, "-m", "avpea_dist.cli", "--version"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == f"avpea {version('avpea-dist')}", p.stdout + p.stderr
