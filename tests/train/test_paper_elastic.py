"""The paper configuration's structure (configs/avel_vitl.yaml: ViT-L/16, 24 blocks, 13.8M trainable
parameters; small inputs, random-init backbone) resumes on another world size and ZeRO stage (issue 24).

Run A: 2 ranks under torchrun at ZeRO 2, 4 steps, checkpoints at 2 and 4 (the session's ``paper_run``,
tests/train/conftest.py, also test_paper_config.py's reference). Its step-2 checkpoint, in a copy of
its run folder, is resumed on 1 rank at ZeRO 0: steps 3 and 4 must log A's losses within float
reduction-order tolerance (the data is world-independent: ``elastic_rank.py``), and the log says the world
changed at step 2.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest

from test_paper_config import _train_lines
from proctree import kill_tree
from trainkit import PAPER_STEPS, paper_start

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

STEPS = PAPER_STEPS
LOSS_RTOL = 1e-5  # see tests/reliability/test_fault_world_change.py


@pytest.mark.timeout(1200)
def test_paper_configuration_resumes_from_two_ranks_zero2_on_one_rank_zero0(paper_run, tmp_path):
    a, _ = paper_run  # run A, shared with test_paper_config.py (tests/train/conftest.py)
    b, log_b = tmp_path / "b", tmp_path / "b.log"
    shutil.copytree(a, b)
    shutil.rmtree(b / "checkpoints" / "step_00000004")
    (b / "checkpoints" / "latest").write_text("step_00000002\n")
    proc = paper_start(b, log_b, 1, "dist.zero_stage=0", "train.deterministic=true")
    try:
        assert proc.wait(timeout=500) == 0, log_b.read_text()[-3000:]
    finally:
        kill_tree(proc)
    assert "resumed at step 2 with another world: 2 ranks at ZeRO 2 -> 1 ranks at ZeRO 0" in log_b.read_text()
    la, lb = {r["step"]: r for r in _train_lines(a)}, {r["step"]: r for r in _train_lines(b)}
    assert sorted(lb) == list(range(1, STEPS + 1))
    for step in range(3, STEPS + 1):
        assert math.isclose(lb[step]["loss"], la[step]["loss"], rel_tol=LOSS_RTOL), (step, lb[step], la[step])
        assert lb[step]["lr_adapter"] == la[step]["lr_adapter"]
    result = json.loads((b / "result.json").read_text())
    assert result["status"] == "finished" and result["world_size"] == 1 and result["step"] == STEPS
