"""The paper configuration's structure (configs/avel_vitl.yaml: ViT-L/16, 24 blocks, 13.8M trainable
parameters; small inputs, random-init backbone) resumes on another world size and ZeRO stage (issue 24).

Run A: 2 ranks under torchrun at ZeRO 2, 4 steps, checkpoints at 2 and 4. Its step-2 checkpoint, in a copy of
its run folder, is resumed on 1 rank at ZeRO 0: steps 3 and 4 must log A's losses within float
reduction-order tolerance (the data is world-independent: ``elastic_rank.py``), and the log says the world
changed at step 2.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_paper_config import SMALL, VITL, _train_lines
from test_resume_2rank import _kill_tree
from trainkit import REPO, free_port

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

STEPS = 4
LOSS_RTOL = 1e-5  # see tests/reliability/test_fault_world_change.py


def _run(out: Path, log: Path, ranks: int, *extra: str) -> int:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-port",
           str(free_port()), os.path.join(REPO, "tests", "train", "elastic_rank.py"), "2", VITL, *SMALL,
           f"train.out={out}", f"train.steps={STEPS}", "train.ckpt_every=2", f"train.eval_every={STEPS}",
           "train.log_every=1", "train.keep_checkpoints=2", "eval.final_split=none", "optim.warmup_steps=1", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": REPO}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        return proc.wait(timeout=500)
    finally:
        _kill_tree(proc)


@pytest.mark.timeout(1200)
def test_paper_configuration_resumes_from_two_ranks_zero2_on_one_rank_zero0(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    assert _run(a, log_a, 2, "dist.zero_stage=2", "train.deterministic=true") == 0, log_a.read_text()[-3000:]
    shutil.copytree(a, b)
    shutil.rmtree(b / "checkpoints" / "step_00000004")
    (b / "checkpoints" / "latest").write_text("step_00000002\n")
    assert _run(b, log_b, 1, "dist.zero_stage=0", "train.deterministic=true") == 0, log_b.read_text()[-3000:]
    assert "resumed at step 2 with another world: 2 ranks at ZeRO 2 -> 1 ranks at ZeRO 0" in log_b.read_text()
    la, lb = {r["step"]: r for r in _train_lines(a)}, {r["step"]: r for r in _train_lines(b)}
    assert sorted(lb) == list(range(1, STEPS + 1))
    for step in range(3, STEPS + 1):
        assert math.isclose(lb[step]["loss"], la[step]["loss"], rel_tol=LOSS_RTOL), (step, lb[step], la[step])
        assert lb[step]["lr_adapter"] == la[step]["lr_adapter"]
    result = json.loads((b / "result.json").read_text())
    assert result["status"] == "finished" and result["world_size"] == 1 and result["step"] == STEPS
