"""The `avpea` parser: core areas plus each task's commands from its TaskSpec, built without heavy imports."""

from __future__ import annotations

import json
import os
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


def _help_paths() -> list[tuple[str, ...]]:
    """Every parser of `avpea` as the words that reach it: (), ('train',), ('shards', 'build', 'ave'), ..."""
    import argparse

    def walk(p: argparse.ArgumentParser, prefix: tuple[str, ...]):
        yield prefix
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                seen: set[int] = set()
                for name, sub in action.choices.items():  # aliases map to the same parser: once
                    if id(sub) not in seen:
                        seen.add(id(sub))
                        yield from walk(sub, prefix + (name,))
    return list(walk(cli.build_parser(), ()))


def test_every_help_imports_only_the_standard_library():
    """`--help` at every level loads no third-party module at all (numpy, yaml, torch...): the parsers are
    built from light modules, heavy imports wait for the handler that runs. Checked for all paths in one
    process, against what the interpreter had loaded before avpea_dist (site's own .pth imports)."""
    paths = _help_paths()
    assert len(paths) > 20 and ("shards", "build", "ave") in paths
    code = ("import contextlib, io, json, sys\nbefore = set(sys.modules)\nfrom avpea_dist import cli\n"
            f"for path in {paths!r}:\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try:\n            cli.main([*path, '--help'])\n        except SystemExit:\n            pass\n"
            "new = {m.split('.')[0] for m in set(sys.modules) - before if not m.startswith('__')}  # __mp_main__\n"
            "print(json.dumps(sorted(new - set(sys.stdlib_module_names) - {'avpea_dist'})))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [], "`--help` must import only the standard library"


def _script() -> list[str]:
    """The installed `avpea` console script beside this interpreter (what a user runs); `python -m` without one."""
    script = Path(sys.executable).parent / "avpea"
    return [str(script)] if script.exists() else [sys.executable, "-m", "avpea_dist.cli"]


def _cpu_children() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


@pytest.mark.slow
def test_help_takes_under_half_a_second():
    """The real script in a fresh process, median of 3 for `avpea --help` and every command's `--help` at every
    level (`shards build ave --help`...: the same parser, built the same way). Rounds are interleaved so that a
    burst of load hits every path alike. The bound is on wall time where the machine has a core to spare
    (1-minute load average below the core count); on an overloaded shared machine
    wall time measures the queue for a core, so the bound applies to the process's own CPU time (user + sys)."""
    import statistics
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this tree's package, even where the install is editable elsewhere
    paths = _help_paths()
    wall: dict[tuple[str, ...], list[float]] = {p: [] for p in paths}
    cpu: dict[tuple[str, ...], list[float]] = {p: [] for p in paths}
    loads = []
    for _ in range(3):
        for path in paths:
            loads.append(os.getloadavg()[0])
            c0, t0 = _cpu_children(), time.perf_counter()
            out = subprocess.run([*_script(), *path, "--help"], cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=60)
            wall[path].append(time.perf_counter() - t0)
            cpu[path].append(_cpu_children() - c0)
            assert out.returncode == 0 and "usage: avpea" in out.stdout, out.stderr
    busy = statistics.median(loads) >= (os.cpu_count() or 1)
    measured, kind = (cpu, "CPU time (machine overloaded)") if busy else (wall, "wall time")
    medians = {" ".join(p) or "(top)": statistics.median(t) for p, t in measured.items()}
    slow = {p: round(m, 3) for p, m in medians.items() if m >= 0.5}
    assert not slow, (f"--help medians of {kind} over 0.5 s: {slow} (load {statistics.median(loads):.1f}; profile: "
                      f"python3 -X importtime -m avpea_dist.cli --help)")
