"""A poisoned copy of the training shards read by rank 1 only: bad samples are skipped, counted, bounded.

Rank 1 reads a copy of the shards in which every training shard carries a sample with undecodable JPEG
bytes, a sample whose members repeat (a duplicated key), and two samples with a pickle member (``.pyd``,
``.pth``) whose payload would write a marker file if anything unpickled it; the last shard is cut in the middle
of a member. Rank 0 reads the clean shards. Within the budget (``data.max_bad_fraction``) the run
finishes: rank 1 replaced and counted every bad sample, never trained on one, both ranks ran the same
steps, and the payload never ran. Over the budget both ranks stop at the same step with one clear line.
"""

from __future__ import annotations

import json

import pytest
from hostile import poison
from runchecks import CONFIG, DETECT_BOUND_S, STEPS, survivors_exit_within, tiny_overrides

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


@pytest.fixture(scope="module")
def poisoned(synth_shards, tmp_path_factory):
    base = tmp_path_factory.mktemp("poisoned")
    marker = base / "PAYLOAD_RAN"
    keys = poison(synth_shards, base / "shards", marker)
    return base / "shards", keys, marker


@pytest.mark.timeout(240)
def test_bad_samples_on_one_rank_are_skipped_counted_and_in_step(zygote, synth_shards, poisoned, tmp_path, figures):
    shards, bad_keys, marker = poisoned
    run = tmp_path / "run"
    job = zygote.run(tmp_path / "logs", CONFIG, tiny_overrides(synth_shards, run, "data.max_bad_fraction=0.9"),
                     rank_overrides={1: [f"data.shards={shards}"]})
    assert [job.code(0), job.code(1)] == [0, 0], job.describe()
    assert not marker.exists(), "the pickle payload in the shard ran"
    steps = [job.events(r, "step") for r in (0, 1)]
    assert len(steps[0]) == len(steps[1]) == STEPS and all(e["applied"] for s in steps for e in s)
    assert sum(e["bad"] for e in steps[0]) == 0
    bad = sum(e["bad"] for e in steps[1])
    assert bad > 0 and bad == sum(e["skipped"] for e in job.events(1, "batch"))
    trained = {k for e in job.events(1, "batch") for k in e["keys"]}
    assert not trained & bad_keys, f"rank 1 trained on corrupt samples {trained & bad_keys}"
    assert all(len(e["keys"]) == 2 for e in job.events(1, "batch"))  # every batch still full
    rank1 = json.loads((run / "checkpoints" / f"step_{STEPS:08d}" / "rank_1.json").read_text())
    assert rank1["bad_samples"] == bad and rank1["seen_samples"] == 2 * STEPS
    figures["poisoned_shard"] = {"bad_samples_skipped_rank1": bad, "trained_samples_rank1": 2 * STEPS,
                                 "steps_rank0": len(steps[0]), "steps_rank1": len(steps[1]), "payload_ran": False}


@pytest.mark.timeout(240)
def test_bad_fraction_over_budget_stops_every_rank_with_a_clear_error(zygote, synth_shards, poisoned, tmp_path,
                                                                        figures):
    shards, _, marker = poisoned
    job = zygote.run(tmp_path / "logs", CONFIG,
                     tiny_overrides(synth_shards, tmp_path / "run", "data.max_bad_fraction=0.05"),
                     rank_overrides={1: [f"data.shards={shards}"]})
    assert not job.hung and not job.report["leftovers"], job.describe()
    assert [job.code(0), job.code(1)] == [2, 2], job.describe()
    assert not marker.exists()
    calls = [len(job.events(r, "step")) for r in (0, 1)]
    assert calls[0] == calls[1] < STEPS
    for r in (0, 1):
        (line,) = [x for x in job.log(r).splitlines() if "error:" in x]
        assert "more than 5.00% of the training samples on some rank were corrupt" in line
        assert f"avpea shards verify {synth_shards if r == 0 else shards}" in line
    survivors_exit_within(job, DETECT_BOUND_S)
    figures["bad_data_budget"] = {"max_bad_fraction": 0.05, "stopped_at_step_call": calls[0], "hangs": 0}
