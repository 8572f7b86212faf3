"""The retrieval demo's figures that do not need a training run (the demo itself runs in CI as
`avpea demo --task retrieval`; its numbers are in docs/retrieval.md; the harness's guards are tested in
tests/train/test_demo.py)."""

from avpea_dist.tasks.retrieval.demo import chance


def test_chance_is_k_over_clips():
    c = chance(60)
    assert c["t2v_r1"] == c["v2t_r1"] == 1 / 60 and c["t2v_r10"] == 10 / 60 and chance(4)["v2t_r5"] == 1.0
