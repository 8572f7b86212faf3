"""Reading a configuration: defaults <- a YAML file (or a shipped config's name) <- dotted overrides.

Values are checked against the dataclasses of ``config.py``: a wrong key gets the closest valid one as a
suggestion, a wrong type names the key and the expected type. YAML is read with ``yaml.safe_load`` only.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .config import Config, ConfigError
from .plugins import task_specs

# Keys that moved into a task's section: a file written before the move still loads (the key lands in the
# section when that task is the run's, and is dropped otherwise: it never applied to other tasks).
MOVED = {"model.num_classes": "avel.num_classes", "model.head_hidden": "avel.head_hidden", "train.loss": "avel.loss"}

# Loading: defaults <- YAML <- dotted overrides, with type checks and close-match suggestions.


def _sections() -> dict[str, type]:
    """Task name -> the dataclass of its config section, for every registered task that has one."""
    return {name: spec.section for name, spec in task_specs().items() if spec.section is not None}


def valid_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    if cls is Config:
        for name, section in _sections().items():
            keys += valid_keys(section, name + ".")
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        if cls is Config and f.name == "sections":
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            keys += valid_keys(hints[f.name], name + ".")
        else:
            keys.append(name)
    return keys


def _unknown_key(key: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if not close:  # a right leaf under a wrong section (optim.lr_head written as train.lr_head)
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in valid if k.rsplit(".", 1)[-1] == leaf][:1]
    hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
    return ConfigError(f"unknown config key '{key}' in {where}{hint}")


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field's type; ints are accepted where floats are expected."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is type(None) and value is None:
                return None
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _coerce(key, value, args[0])
    if origin is list:
        (item,) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads '1e-3' (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{key} must be of type {getattr(annotation, '__name__', annotation)}, got {value!r} "
                      f"({type(value).__name__})")


def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the keys of ``MOVED`` in their new place (see there)."""
    if not any(isinstance(data.get(old.split(".")[0]), dict) and old.split(".")[1] in data[old.split(".")[0]]
               for old in MOVED):
        return data
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for old, new in MOVED.items():
        (osec, okey), (nsec, nkey) = old.split("."), new.split(".")
        if isinstance(data.get(osec), dict) and okey in data[osec]:
            value = data[osec].pop(okey)
            if data.get("task") == nsec:
                data.setdefault(nsec, {}).setdefault(nkey, value)
    return data


def _build(cls: type, data: dict[str, Any], prefix: str, valid: list[str], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    if cls is Config:
        data, sections = dict(data), _sections()
        built = {}
        for name in [k for k in data if k in sections]:
            value = data.pop(name)
            if not isinstance(value, dict):
                raise ConfigError(f"'{name}' is a section; write it as a mapping of keys, got {value!r}")
            built[name] = _build(sections[name], value, name + ".", valid, where)
        names.discard("sections")
        if built:
            kwargs["sections"] = built
    for key, value in data.items():
        full = prefix + str(key)
        if key not in names:
            raise _unknown_key(full, valid, where)
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise ConfigError(f"'{full}' is a section; write it as a mapping of keys, got {value!r}")
            kwargs[key] = _build(annotation, value, full + ".", valid, where)
        else:
            kwargs[key] = _coerce(full, value, annotation)
    return cls(**kwargs)


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """``'model.bottleneck=64'`` -> ``('model.bottleneck', 64)``; the value is read as YAML (safe)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value (e.g. model.bottleneck=64)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has no key before '='")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': value is not valid YAML ({e})") from None
    return key, value


def _nest(key: str, value: Any, valid: list[str]) -> dict:
    parts = key.split(".")
    if any(k.startswith(key + ".") for k in valid):
        raise ConfigError(f"'{key}' is a section; override one of its keys, e.g. '{key}.<key>=value'")
    if key not in valid:
        raise _unknown_key(key, valid, "the command-line overrides")
    out: dict = {parts[-1]: value}
    for p in reversed(parts[:-1]):
        out = {p: out}
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    from .presets import find_config, shipped

    path = find_config(path)  # a shipped config's name (avel_tiny) works as well as a path
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist; pass a YAML file or the name of a shipped "
                          f"config ({', '.join(shipped())})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        problem = getattr(e, "problem", None) or " ".join(str(e).split())
        raise ConfigError(f"config file '{path}' is not valid YAML{at}: {problem} (only plain YAML is read; "
                          f"python tags such as !!python/object are refused)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections, got {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then dotted ``overrides``."""
    valid = valid_keys(Config)
    data: dict[str, Any] = {}
    where = "the defaults"
    if path is not None:
        where = f"config file '{path}'"
        data = _migrate(read_yaml(path))
        _build(Config, data, "", valid, where)  # report YAML mistakes against the file's name
    for text in overrides:
        key, value = parse_override(text)
        data = _deep_merge(data, _nest(key, value, valid))
    return _build(Config, data, "", valid, where if not overrides else f"{where} with overrides")


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config saved with ``to_dict`` (a run folder's config.yaml)."""
    return _build(Config, _migrate(data), "", valid_keys(Config), "a saved config")


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
