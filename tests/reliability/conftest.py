"""Fixtures of the fault-injection tests: one zygote per session, and the measured figures.

Set ``AVPEA_RELIABILITY_REPORT=PATH`` to write the figures the tests measured (trials, faults survived,
samples lost, hangs, detection times) as JSON; the README's Reliability section quotes such a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from faultkit import Job, Zygote
from runchecks import CONFIG, tiny_overrides


@pytest.fixture(scope="session")
def zygote():
    z = Zygote()
    yield z
    z.close()


@pytest.fixture(scope="session")
def figures():
    """Measured figures, merged across tests, written at the end of the session (see the module doc)."""
    found: dict[str, Any] = {}
    yield found
    path = os.environ.get("AVPEA_RELIABILITY_REPORT")
    if path and found:
        Path(path).write_text(json.dumps(found, indent=2) + "\n")


@pytest.fixture(scope="session")
def reference_for(zygote, synth_shards, tmp_path_factory):
    """``reference_for(*overrides)``: the uninterrupted tiny run (with those extra overrides) that faulted and
    resumed runs must match bit for bit, as (run folder, job); each one is run once per session."""
    runs: dict[tuple[str, ...], tuple[Path, Job]] = {}

    def get(*extra: str) -> tuple[Path, Job]:
        if extra not in runs:
            out = tmp_path_factory.mktemp("reference")
            job = zygote.run(out / "logs", CONFIG, tiny_overrides(synth_shards, out / "run", *extra))
            assert [job.code(0), job.code(1)] == [0, 0], job.describe()
            runs[extra] = (out / "run", job)
        return runs[extra]

    return get


@pytest.fixture(scope="session")
def reference(reference_for):
    """The uninterrupted tiny run (ZeRO-0): (run folder, job)."""
    return reference_for()
