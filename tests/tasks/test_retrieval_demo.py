"""The retrieval demo's guards and figures that do not need a training run (the demo itself runs in CI as
`avpea demo --task retrieval`; its numbers are in docs/retrieval.md)."""

import json

import pytest

from avpea_dist.tasks.retrieval.demo import chance, check_out


def test_a_folder_of_another_demo_is_refused(tmp_path):
    run = tmp_path / "runs" / "av_pea"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"status": "finished"}))  # an AVEL run from before tasks
    with pytest.raises(ValueError, match="task 'avel'.*--out"):
        check_out(tmp_path)
    (run / "result.json").write_text(json.dumps({"status": "finished", "task": "retrieval"}))
    check_out(tmp_path)
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "synth.json").write_text(json.dumps({"clips": 200, "seed": 0, "num_classes": 8}))
    with pytest.raises(ValueError, match="another demo's data"):
        check_out(tmp_path)


def test_chance_is_k_over_clips():
    c = chance(60)
    assert c["t2v_r1"] == c["v2t_r1"] == 1 / 60 and c["t2v_r10"] == 10 / 60 and chance(4)["v2t_r5"] == 1.0
