"""A full disk (ENOSPC) on one rank during a checkpoint save: a clear error on every rank, nothing lost.

The fault makes every checkpoint write of one rank fail after its first bytes, during one save only (the
other rank's writes succeed). Both ranks must stop with the same one-line error naming the folder, the
cause and the checkpoint still in charge; the previous checkpoint stays complete and ``latest`` keeps
naming it; rerunning the same command resumes from it and ends exactly like the uninterrupted run.
"""

from __future__ import annotations

import pytest
from runchecks import (CONFIG, DETECT_BOUND_S, checkpoint_steps, latest_pointer, survivors_exit_within,
                       tiny_overrides, train_records)

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("rank,save", [(1, 2), (0, 3)], ids=["rank1-second-save", "rank0-third-save"])
def test_disk_full_during_save_reports_and_keeps_the_previous_checkpoint(zygote, synth_shards, reference, tmp_path,
                                                                          rank, save, figures):
    run = tmp_path / "run"
    failed = zygote.run(tmp_path / "logs0", CONFIG, tiny_overrides(synth_shards, run),
                        faults=[{"kind": "enospc", "at": "save", "nth": save, "rank": rank}])
    assert not failed.hung and not failed.report["leftovers"], failed.describe()
    assert [failed.code(0), failed.code(1)] == [2, 2], failed.describe()  # a user-facing error, not a crash
    assert failed.events(rank, "fault")[0]["kind"] == "enospc"
    previous = f"step_{2 * (save - 1):08d}"
    for r in (0, 1):
        line = [x for x in failed.log(r).splitlines() if "error:" in x]
        assert len(line) == 1, failed.log(r)
        assert f"could not save checkpoint '{run / 'checkpoints' / f'step_{2 * save:08d}'}'" in line[0]
        assert "No space left on device" in line[0] or r != rank  # the failing rank names the cause
        assert f"'latest' still names {run / 'checkpoints' / previous}" in line[0]
        assert "Traceback" not in failed.log(r)
    complete, partial = checkpoint_steps(run)
    assert complete == [2 * (save - 1)] and partial == [], (complete, partial)
    assert latest_pointer(run) == previous
    survivors_exit_within(failed, DETECT_BOUND_S)

    rerun = zygote.run(tmp_path / "logs1", CONFIG, tiny_overrides(synth_shards, run))
    assert [rerun.code(0), rerun.code(1)] == [0, 0], rerun.describe()
    assert [e["step"] for e in rerun.events(0, "load")] == [2 * (save - 1)]
    assert train_records(run) == train_records(reference[0])
    figures.setdefault("disk_full", []).append({"rank": rank, "save": save, "survived": True, "samples_lost": 0})
