"""The samples log (train.log_samples): one line per step, trimmed to the restored data position on resume,
and the per-epoch check behind `avpea run samples --check`."""

from __future__ import annotations

import json

import pytest

from avpea_dist.train.loop import DataPosition, LoopState, data_position_of
from avpea_dist.train.metrics import read_jsonl
from avpea_dist.train.samples_log import SamplesLog, check_samples


def _write(run, epoch_batches=3, per=2, upto=(1, 2)):
    log = SamplesLog(run, True, True, 0, 0)
    step = 0
    for e in range(upto[0] + 1):
        for b in range(epoch_batches if e < upto[0] else upto[1]):
            step += 1
            log.record([f"k{(b * per + i + e) % 7}" for i in range(per)], epoch=e, batch=b, step=step,
                       epoch_batches=epoch_batches)


def test_lines_are_trimmed_to_the_restored_position(tmp_path):
    _write(tmp_path)
    assert [len(read_jsonl(tmp_path / "samples" / f"epoch_{e}.jsonl")) for e in (0, 1)] == [3, 2]
    SamplesLog(tmp_path, True, True, 0, 2)  # resumed after 2 global batches of epoch 0
    assert [r["batch"] for r in read_jsonl(tmp_path / "samples" / "epoch_0.jsonl")] == [0, 1]
    assert not (tmp_path / "samples" / "epoch_1.jsonl").exists()
    line = read_jsonl(tmp_path / "samples" / "epoch_0.jsonl")[1]
    assert line == {"epoch": 0, "step": 2, "world_size": 1, "keys": ["k2", "k3"], "batch": 1, "epoch_batches": 3}
    SamplesLog(tmp_path, True, True, 0, 0)  # a fresh start keeps nothing
    assert not list((tmp_path / "samples").iterdir())


def test_check_reports_distinct_repeats_and_missing(tmp_path):
    _write(tmp_path)
    rows = check_samples(tmp_path, 7)
    assert rows[0] == {"epoch": 0, "steps_logged": 3, "distinct": 6, "split_size": 7, "repeats": 0,
                       "duplicate_batches": 0, "finished": True, "missing": 0, "sampling": "sequential", "ok": True}
    assert rows[1]["finished"] is False and rows[1]["missing"] is None and rows[1]["ok"]
    path = tmp_path / "samples" / "epoch_0.jsonl"
    lines = read_jsonl(path)
    lines[2]["keys"] = ["k0", "k5"]  # k4 never seen, k0 twice
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    (row, _) = check_samples(tmp_path, 7)
    assert (row["repeats"], row["missing"], row["ok"]) == (1, 1, False)
    # balanced epochs draw with replacement: the repeat is reported, not a failure; a batch logged twice is
    (row, _) = check_samples(tmp_path, 7, sampling="balanced")
    assert (row["repeats"], row["missing"], row["ok"]) == (1, None, True)
    path.write_text("".join(json.dumps(r) + "\n" for r in lines + [lines[2]]))
    (row, _) = check_samples(tmp_path, 7, sampling="balanced")
    assert (row["duplicate_batches"], row["ok"]) == (1, False)


def test_the_data_position_restarts_at_any_global_batch_count():
    assert DataPosition(2, 3, 8).restart(8, 5) == (2, 3)
    assert DataPosition(2, 5, 8).restart(8, 5) == (3, 0)  # the epoch's last batch was consumed
    assert DataPosition(0, 3, 8).restart(6, 5) == (0, 4)  # 24 clips consumed: the first batch not wholly used
    old = LoopState(step=5, extra={"micro_batches": 10})  # a checkpoint from before data_position
    assert data_position_of(old, 4, 2) == DataPosition(1, 1, 0)
    new = LoopState(extra={"data_position": DataPosition(1, 2, 6).to_dict()})
    assert data_position_of(LoopState.from_dict(json.loads(json.dumps(new.to_dict()))), 4, 2) == DataPosition(1, 2, 6)


@pytest.mark.parametrize("enabled,main", [(False, True), (True, False)])
def test_nothing_is_written_off_rank_zero_or_when_off(tmp_path, enabled, main):
    SamplesLog(tmp_path, enabled, main, 0, 0).record(["a"], epoch=0, batch=0, step=1, epoch_batches=1)
    assert not (tmp_path / "samples").exists()
