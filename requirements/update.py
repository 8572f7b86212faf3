"""Rewrite requirements/lock.txt: the exact versions of everything ``pip install .[dev]`` (the core, every
extra, the test tools) installs today, on this machine's Python and platform. One command:

    python3 requirements/update.py                 # a fresh venv in a temporary folder, removed afterwards
    python3 requirements/update.py --venv DIR      # use (or create) DIR: keeps the environment for a look

It installs for real, into a venv of its own (never the environment it runs in), runs ``pip check``, and
writes ``pip freeze`` of that venv: a resolution that pip could install, not only one it could compute. CI's
locked run (``.ci/run --locked``) then installs exactly the lock and runs the suite on it. pip's own
configuration applies (index, find-links, a constraint file): on the project's CPU machines a constraint
caps torch at 2.14.1, which the lock then shows. ~6 GB and several minutes (torch's CUDA wheels).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
SELF = "avpea-dist"


def _pip(python: Path, *args: str) -> str:
    done = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"pip {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def freeze(env_dir: Path) -> list[str]:
    """Install ``.[dev]`` into the venv at ``env_dir`` (made when absent), check it, -> its ``NAME==VERSION`` lines."""
    python = env_dir / "bin" / "python"
    if not python.exists():
        venv.EnvBuilder(with_pip=True).create(env_dir)
    _pip(python, "install", "--quiet", f"{ROOT}[dev]")
    _pip(python, "check")
    lines = _pip(python, "freeze", "--all", "--exclude", SELF, "--exclude", "pip").splitlines()
    pins = sorted((s for s in lines if "==" in s), key=str.lower)
    odd = [s for s in lines if s and "==" not in s]
    if odd:
        raise SystemExit(f"pip freeze gave entries that are not NAME==VERSION (installed from a path or VCS?): {odd}")
    return pins


def closure(extra: str = "dev") -> list[str]:
    """``NAME==VERSION`` of every distribution ``avpea-dist[extra]`` needs, as installed in the running
    environment (its requirements followed transitively, markers evaluated here): the environment the suite
    just ran in, pinned, without a new resolution. Checked by ``pip check`` first."""
    import importlib.metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    pins, todo = {}, [(SELF, {extra})]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in pins and not extras:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise SystemExit(f"{name} is required by avpea-dist[{extra}] but not installed here: "
                             f"pip install -e '.[{extra}]' first") from None
        pins[key] = f"{dist.metadata['Name']}=={dist.version}"
        for text in dist.requires or []:
            req = Requirement(text)
            wanted = [e for e in extras or {""} if not req.marker or req.marker.evaluate({"extra": e})]
            if wanted:
                todo.append((req.name, set(req.extras)))
    pins.pop(canonicalize_name(SELF))
    pins.pop("pip", None)
    locked = {canonicalize_name(p.split("==")[0]) for p in pins.values()}
    # a line is "X v has requirement ...": only a broken requirement of a locked distribution matters
    broken = [line for line in check.stdout.splitlines() if line.split() and canonicalize_name(line.split()[0]) in locked]
    if check.returncode and broken:
        raise SystemExit("pip check fails for the locked set:\n" + "\n".join(broken))
    return sorted(pins.values(), key=str.lower)


def render(pins: list[str]) -> str:
    head = [
        "# The tested environment: every distribution `pip install .[dev]` installs (core, all extras, test tools),",
        f"# for Python {platform.python_version()} on {sys.platform}-{platform.machine()}.",
        "# Written by `python3 requirements/update.py` (do not edit); installed and tested by `.ci/run --locked`.",
        "# Reproduce: pip install -r requirements/lock.txt && pip install --no-deps -e .",
        "# Other platforms (macOS, aarch64, CPU-only torch builds) resolve other wheels: use the ranges there.",
    ]
    return "\n".join(head + pins) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, help="venv folder to install into (kept; default: a temporary one)")
    parser.add_argument("--from-env", action="store_true",
                        help="pin what the running environment has installed for .[dev] (where the suite just "
                             "passed) instead of resolving afresh: seconds, and no resolver backtracking")
    args = parser.parse_args(argv)
    if args.from_env:
        pins = closure()
    elif args.venv:
        pins = freeze(args.venv.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="avpea-lock-") as tmp:
            pins = freeze(Path(tmp) / "venv")
    tmp_lock = LOCK.with_suffix(".tmp")
    tmp_lock.write_text(render(pins))
    tmp_lock.replace(LOCK)  # atomic: a reader sees the old lock or the new one, never half of one
    print(f"wrote {LOCK}: {len(pins)} pins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
