"""The one shard builder's interface: ``BuildOptions``, ``DatasetBuilder`` and ``SynthSource``.

A dataset package (``datasets/<name>/``) provides one ``DatasetBuilder`` (its release reader and release
options) as ``build.py:BUILDER`` and, when it has an embedded synthetic set, one ``SynthSource`` as
``synth.py:SYNTH``; ``plugins.dataset_spec(name)`` names both. Every builder shares the same machinery
(``sharding.py``): a seeded plan of shards, a split across build tasks (``avpea submit shards build``),
resumable part records and one manifest merged at the end, byte-equal whatever the task layout. Used as::

    b = plugins.load(plugins.dataset_spec("ave").builder); s = plugins.load(spec.synth)
    s.make(raw, **opts); b.build(shards, b.options(workers=4), **s.source(raw))
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from .options import AUDIO_WINDOWS, BuildOptions

__all__ = ["AUDIO_WINDOWS", "BuildOptions", "DatasetBuilder", "Prepare", "SynthSource"]

Prepare = Callable[[list[Any]], None]
"""Called by a build task with the samples it is about to decode (a synthetic source writes their videos)."""


class DatasetBuilder:
    """A release -> shards of ``schema``. Subclasses read their release in ``release`` and declare options."""

    name: str = ""
    schema: str = ""
    unit: str = "records"
    """What ``--shard-size`` counts (a release record, or a video holding several records)."""
    defaults: dict[str, Any] = {}
    """This dataset's defaults of shared ``BuildOptions`` (``min_seconds``, ``sampling``); read-only. A
    dataset that names ``sampling`` here offers ``--sampling``; one that does not keeps per-second segments."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The release options (``--root``, ``--json-dir``, ``--videos`` ...)."""
        raise NotImplementedError

    def source(self, args: argparse.Namespace) -> dict[str, Any]:
        """Parsed release options -> the keyword arguments of ``build`` / ``release``."""
        raise NotImplementedError

    def release(self, out: Path, opts: BuildOptions, **source: Any) -> Any:
        """Read the release -> a ``sharding.Release``: the samples per split and how they are recorded."""
        raise NotImplementedError

    def options(self, **overrides: Any) -> BuildOptions:
        """``BuildOptions`` with this dataset's defaults under ``overrides``."""
        return BuildOptions(**{**self.defaults, **overrides})

    def build_task(self, out: str | Path, opts: BuildOptions, *, task: int = 0, tasks: int = 1,
                   run: str | None = None, progress: bool = True, prepare: Prepare | None = None,
                   **source: Any) -> dict[str, Any]:
        """Build (or resume) task ``task`` of ``tasks``; -> ``{"manifest": the merged manifest when this task
        finished last, else None, "stats": {...}}``. ``run`` names the job the tasks belong to (its id)."""
        from .sharding import build_task

        out = Path(out)
        return build_task(out, self.release(out, opts, **source), opts, task=task, tasks=tasks, run=run,
                          progress=progress, prepare=prepare, desc=f"build {self.name}")

    def build(self, out: str | Path, opts: BuildOptions, *, task: int = 0, tasks: int = 1, progress: bool = True,
              run: str | None = None, rebuild: bool = False, **source: Any) -> dict[str, Any] | None:
        """-> the manifest (with extra ``"stats"`` and ``"changes"`` entries, not stored) once complete: after a
        one-task build, or from the task of a split build that finished last; else None. ``rebuild``: remove
        the earlier build in ``out`` first (one task only: a split build's submitter does it before its job)."""
        if rebuild:
            if tasks != 1:
                raise ValueError("rebuild=True in a task of a split build would remove its sibling tasks' work; "
                                 "clear the folder once before the job (parts.clear_build)")
            from .parts import clear_build

            clear_build(Path(out))
        result = self.build_task(out, opts, task=task, tasks=tasks, run=run, progress=progress, **source)
        manifest = result["manifest"]
        if manifest is None and tasks == 1:  # one task records every shard: cannot happen
            raise RuntimeError(f"{out}: shards are missing after a one-task build")
        if manifest is not None:
            manifest["stats"], manifest["changes"] = result["stats"], result["changes"]
        return manifest

    def merge(self, out: str | Path, opts: BuildOptions, tasks: int, **source: Any) -> dict[str, Any] | None:
        """After a job of ``tasks`` tasks ended: merge their parts into ``manifest.json`` (as the last task
        does); None if a task did not finish."""
        from .sharding import merge

        out = Path(out)
        return merge(out, self.release(out, opts, **source), opts, tasks)

    def report_lines(self, manifest: dict[str, Any], out: str) -> list[str]:
        """Lines about this dataset's own manifest fields, printed after a build (vocabularies, text model)."""
        return []


class SynthSource:
    """An embedded synthetic set written in the dataset's raw release layout, deterministic from a seed."""

    build_alias: str | None = None
    """When set: ``avpea shards build <alias> --root R`` (and ``submit shards build <alias>``) write the set to R
    first, then build it."""
    default: bool = False
    """The set ``avpea shards synth --out DIR`` writes when no dataset is named (one source at most)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        raise NotImplementedError

    def options(self, args: argparse.Namespace) -> dict[str, Any]:
        """Parsed options -> the keyword arguments of ``make``."""
        raise NotImplementedError

    def make(self, out: Path, progress: bool = False, **options: Any) -> dict[str, Any]:
        """Write the raw release layout to ``out`` (a folder already holding the same set is reused);
        -> a summary (counts per split)."""
        raise NotImplementedError

    def source(self, out: Path) -> dict[str, Any]:
        """The builder's source keyword arguments for the set in ``out``."""
        raise NotImplementedError

    def lazy(self, out: Path, **options: Any) -> Prepare | None:
        """For a split build: write what every task needs now (annotations) and return the hook that writes
        the videos of the samples a task is about to decode; None: ``make`` everything first."""
        return None

    def describe(self, summary: dict[str, Any], out: str) -> str:
        """One line about a set just written (``shards synth``)."""
        return f"synthetic set in {out}"
