"""The install: what pyproject.toml declares matches what the code imports, the extras and the lock agree with
the ranges, and the core (no extra) trains and predicts AVEL while an extra's command names its pip line."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from avpea_dist import extras

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SELF = canonicalize_name(PROJECT["name"])
UNIONS = ("all", "dev")
"""Extras that are unions: [all] = every feature extra, [dev] = [all] + the test tools."""
NOT_IMPORTED = {"tensorboard": "torch.utils.tensorboard imports it (train/metrics.py)"}
"""Declared distributions that the package uses without importing them by their own name."""


def requirements(extra: str | None = None) -> list[Requirement]:
    """The requirements of the core (None) or of ``extra``, self-references ([all] in [dev]) expanded."""
    out = []
    for line in PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]:
        req = Requirement(line)
        if canonicalize_name(req.name) == SELF:
            for sub in sorted(req.extras):
                out += requirements(sub)
        else:
            out.append(req)
    return out


IMPORT = re.compile(r"^[ \t]*(?:import[ \t]+([A-Za-z_]\w*)|from[ \t]+([A-Za-z_]\w*)[\w.]*[ \t]+import[ \t])", re.M)


@functools.lru_cache(maxsize=1)
def _imports() -> dict[str, set[str]]:
    """Top-level third-party module -> the package modules importing it (also inside functions; relative
    imports start with a dot and do not match). A line scan: parsing every module takes seconds."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "avpea_dist").rglob("*.py"):
        for m in IMPORT.finditer(path.read_text()):
            top = m[1] or m[2]
            if top not in sys.stdlib_module_names and top not in ("avpea_dist", "__future__"):
                found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@functools.lru_cache(maxsize=None)
def _provides(dist: str) -> frozenset[str]:
    """The top-level modules an installed distribution provides (from its file list; empty if not installed)."""
    try:
        d = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return frozenset()
    top = (d.read_text("top_level.txt") or "").split()
    if top:
        return frozenset(top)
    tops = {f.parts[0].removesuffix(".py") for f in d.files or () if len(f.parts) > 1 or f.suffix == ".py"}
    return frozenset(t for t in tops if t.isidentifier())


def _distributions(module: str) -> set[str]:
    """Which of the declared distributions (core, any extra, the test tools) provide ``module``."""
    every = _declared("dev") | _declared()
    return {d for d in every if module in _provides(d)}


def _declared(extra: str | None = None) -> set[str]:
    return {canonicalize_name(r.name) for r in requirements(extra)}


FEATURES = sorted(set(PROJECT["optional-dependencies"]) - set(UNIONS))


def test_every_imported_package_is_declared():
    declared = _declared().union(*(_declared(e) for e in FEATURES))
    undeclared = {m: sorted(users)[:3] for m, users in _imports().items() if not _distributions(m) & declared}
    assert not undeclared, f"imported but not declared in pyproject.toml (core or an extra): {undeclared}"


@pytest.mark.parametrize("extra", [None, *FEATURES])
def test_every_declared_package_is_imported(extra):
    imported = set().union(*(_distributions(m) for m in _imports()))
    if extra is not None and not imported & _declared(extra):
        pytest.skip(f"no module of this tree uses the [{extra}] extra yet (its code lands with another branch)")
    unused = sorted(_declared(extra) - imported - set(NOT_IMPORTED))
    assert not unused, f"declared in pyproject.toml [{extra or 'core'}] but never imported: {unused}"


def test_extras_table_matches_pyproject():
    """extras.EXTRAS (what the code checks) names each feature extra of pyproject.toml, with modules that
    come from that extra's own distributions; [all] is their union and [dev] contains [all]."""
    assert sorted(extras.EXTRAS) == FEATURES
    for name, extra in extras.EXTRAS.items():
        for module in extra.modules:
            dists = _distributions(module)
            assert dists, f"extras.EXTRAS[{name!r}] lists {module!r}, which no installed distribution provides"
            assert dists & _declared(name), f"{module!r} of [{name}] is not provided by [{name}]'s requirements"
    union = set().union(*(_declared(e) for e in FEATURES))
    assert _declared("all") == union
    assert union < _declared("dev") and {"pytest", "pytest-timeout"} <= _declared("dev")
    assert not _declared() & union, "a core requirement is repeated in an extra"


def test_no_package_is_declared_twice_and_bounds_are_explicit():
    for extra in (None, *FEATURES):
        names = [canonicalize_name(r.name) for r in requirements(extra)]
        assert len(names) == len(set(names)), f"[{extra or 'core'}] declares a package twice: {names}"
        for req in requirements(extra):
            assert any(s.operator in (">=", "~=", "==") for s in req.specifier), f"{req} has no lower bound"


def _lock() -> dict[str, str]:
    lines = [s.strip() for s in (ROOT / "requirements" / "lock.txt").read_text().splitlines()]
    pins = [s for s in lines if s and not s.startswith("#")]
    parsed = [re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", s) for s in pins]
    bad = [s for s, m in zip(pins, parsed) if m is None]
    assert not bad, f"requirements/lock.txt lines that are not NAME==VERSION: {bad[:5]}"
    names = [canonicalize_name(m[1]) for m in parsed]
    assert len(names) == len(set(names)), "requirements/lock.txt pins a package twice"
    return {canonicalize_name(m[1]): m[2] for m in parsed}


def test_lock_pins_a_version_inside_every_range():
    """Every requirement of [dev] (core, all extras, test tools) is pinned in the lock, at a version its range
    admits; the lock does not pin this package itself (CI installs it from the tree, --no-deps)."""
    lock = _lock()
    assert SELF not in lock
    outside = {}
    for req in requirements("dev") + requirements():
        name = canonicalize_name(req.name)
        if name not in lock:
            outside[name] = "not pinned"
        elif not req.specifier.contains(lock[name], prereleases=True):
            outside[name] = f"{lock[name]} not in {req.specifier}"
    assert not outside, f"requirements/lock.txt disagrees with pyproject.toml: {outside}; run requirements/update.py"


def test_ci_installs_the_lock_in_one_run():
    text = (ROOT / ".ci" / "run").read_text()
    assert "--locked" in text and "pip install -q -r requirements/lock.txt" in text and "--no-deps -e ." in text


# --- The missing-extra message, in-process (a module mapped to None in sys.modules cannot be imported).


def _block(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


def test_require_names_the_pip_line(monkeypatch):
    extras.require("sweep", "avpea sweep")  # installed here: no error
    _block(monkeypatch, "ray")
    with pytest.raises(extras.MissingExtra, match=r"avpea sweep needs the \[sweep\] extra .*not installed: ray.* "
                       r"pip install 'avpea-dist\[sweep\]'") as info:
        extras.require("sweep", "avpea sweep")
    assert isinstance(info.value, ImportError) and info.value.extra == "sweep"
    with pytest.raises(KeyError, match="unknown extra"):
        extras.missing("gpu")


def test_sweep_command_without_ray_says_what_to_install(monkeypatch, capsys):
    from avpea_dist import cli

    _block(monkeypatch, "ray")
    assert cli.main(["sweep", "avel_tiny", "--bottleneck", "4,8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "avpea sweep: error:" in err and "pip install 'avpea-dist[sweep]'" in err


def test_text_side_without_transformers_says_what_to_install(monkeypatch, tmp_path):
    from avpea_dist.datasets.valor import text, textmodel
    from avpea_dist.tasks.captioning import metrics

    _block(monkeypatch, "transformers", "tokenizers", "pycocoevalcap")
    for call in (lambda: textmodel.load_tokenizer(str(tmp_path)), lambda: text.train_tokenizer(["a dog barks"]),
                 lambda: metrics.score_captions({"a": ["a dog"]}, {"a": "a dog"})):
        with pytest.raises(extras.MissingExtra, match=r"\[text\] extra.*pip install 'avpea-dist\[text\]'"):
            call()


# --- The core install, for real: AVEL trains and predicts with every extra's modules unimportable.

BLOCKER = '''
import os, runpy, sys
BLOCKED = set(os.environ["AVPEA_TEST_BLOCKED"].split(","))
class Blocked:
    """A finder that refuses the extras' modules, as if they were not installed."""
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
sys.meta_path.insert(0, Blocked())
sys.argv = ["avpea", *sys.argv[1:]]
runpy.run_module("avpea_dist.cli", run_name="__main__")
'''


@pytest.mark.slow
def test_core_without_any_extra_trains_and_predicts_avel(tmp_path, synth_shards):
    """Every module of the feature extras (and torchaudio, no longer used) unimportable: `avpea train` and
    `avpea predict` of AVEL finish, `avpea sweep` exits 2 with the pip line. (A real core-only venv was also
    built and measured: docs/install.md.)"""
    blocked = sorted({m for e in extras.EXTRAS.values() for m in e.modules if m != "fsspec"} | {"torchaudio"})
    # fsspec stays: torch itself depends on it, so every core install has it.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AVPEA_TEST_BLOCKED": ",".join(blocked), "TQDM_DISABLE": "1"}

    def avpea(*args: str, rc: int = 0) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-c", BLOCKER, *args], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)
        assert p.returncode == rc, f"avpea {' '.join(args)} -> {p.returncode}\n{p.stdout[-1500:]}\n{p.stderr[-3000:]}"
        return p

    run = tmp_path / "run"
    train = avpea("train", "avel_tiny", f"data.shards={synth_shards}", f"train.out={run}", "model.img_size=32",
                  "train.steps=2", "train.eval_every=2", "train.ckpt_every=2", "eval.batch_size=4",
                  "train.progress=false")
    assert json.loads(train.stdout.strip().splitlines()[-1])["status"] == "finished"
    video = sorted((synth_shards.parent / "ave" / "AVE").glob("*.mp4"))[0]
    avpea("predict", "--run", str(run), "--out", str(tmp_path / "pred"), str(video))
    timeline = json.loads((tmp_path / "pred" / f"{video.stem}.json").read_text())
    assert len(timeline["seconds"]) == 10 and (tmp_path / "pred" / f"{video.stem}.png").stat().st_size > 0
    sweep = avpea("sweep", "avel_tiny", "--bottleneck", "4,8", rc=2)
    assert "pip install 'avpea-dist[sweep]'" in sweep.stderr and "Traceback" not in sweep.stderr
