"""The configurations shipped with the package, found by name: ``avpea train avel_tiny``.

In a checkout they are the repository's ``configs/*.yaml``; in an installed wheel the same files sit in
the package as ``avpea_dist/configs/`` (pyproject.toml maps the one onto the other), so a name works
wherever the package runs, and a path works as a path.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def config_dirs() -> list[Path]:
    """Where shipped configs live: inside the installed package, or the checkout's configs/."""
    return [d for d in (_PACKAGE / "configs", _PACKAGE.parent / "configs") if d.is_dir()]


def shipped() -> list[str]:
    return sorted({p.stem for d in config_dirs() for p in d.glob("*.yaml")})


def find_config(name_or_path: str | Path) -> Path:
    """An existing file as given; else a shipped config by name (``avel_tiny``, ``avel_tiny.yaml``, or
    ``configs/avel_tiny.yaml`` typed outside a checkout). Unknown: the path as given (the reader names it)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name[:-5] if path.name.endswith(".yaml") else path.name
    if path.parent in (Path("."), Path("configs")):
        for d in config_dirs():
            if (d / f"{stem}.yaml").is_file():
                return d / f"{stem}.yaml"
    return path
