"""The package's layering, read from the source (every import statement, also those inside functions and
under TYPE_CHECKING): data flows one way and imports follow it.

    base (errors, fileio, config, plugins, compat) -> runtime -> models | data -> datasets -> tasks -> train
    -> launch | apps (run loading, shards, predict, search, caption, model-info, the demo harness) -> cli

A module imports only from its own layer or lower ones; models and data do not import each other; one
dataset or task package does not import another (what two share lives in a lower layer); and there is no
import cycle between modules at all.
"""

from __future__ import annotations

import ast
import fnmatch
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "avpea_dist"

# (layer, patterns) from the bottom up; the first pattern that matches a module decides.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("cli", ("avpea_dist.cli",)),
    ("apps", ("avpea_dist.apps", "avpea_dist.apps.*", "avpea_dist.launch", "avpea_dist.launch.*")),
    ("train", ("avpea_dist.train", "avpea_dist.train.*")),
    ("tasks", ("avpea_dist.tasks", "avpea_dist.tasks.*")),
    ("datasets", ("avpea_dist.datasets", "avpea_dist.datasets.*")),
    ("models", ("avpea_dist.models", "avpea_dist.models.*")),
    ("data", ("avpea_dist.data", "avpea_dist.data.*")),
    ("runtime", ("avpea_dist.runtime", "avpea_dist.runtime.*")),
    ("base", ("avpea_dist", "avpea_dist.errors", "avpea_dist.extras", "avpea_dist.fileio", "avpea_dist.config",
              "avpea_dist.config_load", "avpea_dist.presets", "avpea_dist.plugins", "avpea_dist.compat",
              "avpea_dist.compat.*", "avpea_dist.storage", "avpea_dist.storage.*")),
]
RANK = {"base": 0, "runtime": 1, "models": 2, "data": 2, "datasets": 3, "tasks": 4, "train": 5, "apps": 6, "cli": 7}
PLUGIN_PACKAGES = ("avpea_dist.datasets", "avpea_dist.tasks")


def layer_of(module: str) -> str:
    for layer, patterns in LAYERS:
        if any(fnmatch.fnmatchcase(module, p) for p in patterns):
            return layer
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in tests/test_layers.py")


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t in mods and t != name:
                    graph[name].add(t)
    return graph


def _owner(module: str) -> str | None:
    """The plug-in package a module belongs to (avpea_dist.tasks.avqa for avpea_dist.tasks.avqa.head)."""
    for root in PLUGIN_PACKAGES:
        if module.startswith(root + "."):
            head = ".".join(module.split(".")[:3])
            path = modules().get(head)
            return head if path is not None and path.name == "__init__.py" else None  # tasks.base: shared
    return None


def test_every_import_follows_the_layers():
    bad = []
    for src, targets in import_graph().items():
        for dst in targets:
            ls, ld = layer_of(src), layer_of(dst)
            if RANK[ld] > RANK[ls]:
                bad.append(f"{src} ({ls}) imports {dst} ({ld}), a higher layer")
            elif {ls, ld} == {"models", "data"}:
                bad.append(f"{src} ({ls}) imports {dst} ({ld}): models and data are independent")
            elif ls == ld and _owner(src) and _owner(dst) and _owner(src) != _owner(dst) and ls != "apps":
                bad.append(f"{src} imports {dst}: one {ls[:-1]} package imports another (move what they share down)")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycle():
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(modules()):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
    """The rule would fail on a model that imports the trainer (so the tests above can fail)."""
    assert RANK[layer_of("avpea_dist.train.loop")] > RANK[layer_of("avpea_dist.models.encoder")]
    assert layer_of("avpea_dist.apps.search") == "apps"
    assert _owner("avpea_dist.tasks.avqa.head") == "avpea_dist.tasks.avqa"
