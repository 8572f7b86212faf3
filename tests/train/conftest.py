"""Fixtures shared by the training tests.

``paper_run``: run A of the paper-structure tests (configs/avel_vitl.yaml, 2 ranks under torchrun at ZeRO 2,
deterministic, checkpoints at steps 2 and 4), made once per session. test_paper_config.py compares a killed and
resumed run B with it step for step; test_paper_elastic.py resumes a copy of its step-2 checkpoint on 1 rank at
ZeRO 0. Both only read it (the elastic test copies the folder first), so one uninterrupted ViT-L run serves both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proctree import kill_tree
from trainkit import paper_start


@pytest.fixture(scope="session")
def paper_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """-> (run folder, its log) of the uninterrupted 2-rank ZeRO-2 paper-structure run."""
    root = tmp_path_factory.mktemp("paper")
    out, log = root / "a", root / "a.log"
    proc = paper_start(out, log, 2, "dist.zero_stage=2", "train.deterministic=true")
    try:
        assert proc.wait(timeout=500) == 0, log.read_text()[-3000:]
    finally:
        kill_tree(proc)
    return out, log
