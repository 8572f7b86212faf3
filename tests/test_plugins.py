"""Tasks and datasets plug in without editing the package: found in their folders, or through the entry point
groups of another installed distribution (a real dist-info folder on sys.path, read by importlib.metadata)."""

from __future__ import annotations

import textwrap

import pytest

from avpea_dist import plugins
from avpea_dist.errors import ConfigError


@pytest.fixture
def fresh_registry(monkeypatch):
    """The registry's caches emptied before and after, so one test's plug-ins do not leak into the next."""
    plugins.task_specs.cache_clear()
    plugins.dataset_specs.cache_clear()
    yield
    plugins.task_specs.cache_clear()
    plugins.dataset_specs.cache_clear()


def _install(site, name: str, entry_points: str, module: str) -> None:
    """A distribution as pip leaves it: the module and NAME-0.1.dist-info/{METADATA,entry_points.txt}."""
    (site / f"{name}.py").write_text(textwrap.dedent(module))
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


def test_the_shipped_tasks_and_datasets_are_found_in_their_folders(fresh_registry):
    assert {"avel", "avqa", "retrieval", "captioning"} <= set(plugins.task_specs())
    assert {"ave", "musicavqa", "valor"} <= set(plugins.dataset_specs())
    assert set(plugins.schema_readers("captions")) == {"captioning", "retrieval"}
    with pytest.raises(ConfigError, match="unknown task 'nope'; choose one of"):
        plugins.task_spec("nope")


def test_a_third_party_task_and_dataset_come_in_through_entry_points(tmp_path, monkeypatch, fresh_registry):
    _install(tmp_path, "avpea_toy_plugin", """
        [avpea_dist.tasks]
        toyplug = avpea_toy_plugin:TASK
        [avpea_dist.datasets]
        toyset = avpea_toy_plugin:DATASET
        """, """
        from dataclasses import dataclass
        from avpea_dist.plugins import DatasetSpec, TaskSpec

        @dataclass
        class ToyConfig:
            width: int = 3

        TASK = TaskSpec(name="toyplug", task="avpea_toy_plugin:Nothing", schema="toyschema", section=ToyConfig)
        DATASET = DatasetSpec(name="toyset", schema="toyschema", builder="avpea_toy_plugin:Nothing")
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "toyplug" in plugins.task_specs() and "toyset" in plugins.dataset_specs()
    assert "toyschema" in plugins.schemas() and plugins.schema_readers("toyschema") == ("toyplug",)

    from avpea_dist.config_load import load_config

    cfg = load_config(None, ["task=toyplug", "toyplug.width=5"])
    assert cfg.toyplug.width == 5 and cfg.task_section is cfg.sections["toyplug"]
    assert cfg.to_dict()["toyplug"] == {"width": 5}
    with pytest.raises(ConfigError, match="toyplug.widht"):
        load_config(None, ["task=toyplug", "toyplug.widht=5"])


def test_a_broken_entry_point_is_named(tmp_path, monkeypatch, fresh_registry):
    _install(tmp_path, "avpea_broken_plugin", """
        [avpea_dist.tasks]
        broken = avpea_broken_plugin:MISSING
        """, "X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="entry point 'broken'.*failed to load"):
        plugins.task_specs()


def test_a_spec_of_the_wrong_kind_or_a_repeated_name_is_refused(tmp_path, monkeypatch, fresh_registry):
    _install(tmp_path, "avpea_twice_plugin", """
        [avpea_dist.tasks]
        again = avpea_twice_plugin:SPEC
        """, """
        from avpea_dist.plugins import TaskSpec
        SPEC = TaskSpec(name="avel", task="x:Y", schema="avel")
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="two TaskSpecs are named 'avel'"):
        plugins.task_specs()


def test_load_resolves_module_and_attribute():
    assert plugins.load("avpea_dist.plugins:TaskSpec") is plugins.TaskSpec
    assert plugins.load("avpea_dist.plugins:TaskSpec.task_class") is plugins.TaskSpec.task_class
