"""Retrieval metrics against hand-made similarity matrices whose ranks are worked out by hand."""

import pytest
import torch

from avpea_dist.tasks.retrieval.metrics import retrieval_metrics


def test_several_captions_per_clip_and_a_tie():
    # 3 clips; captions 0 and 1 belong to clip 0, caption 2 to clip 1, caption 3 to clip 2.
    sim = torch.tensor([[0.9, 0.1, 0.2],   # caption 0: its clip first            -> t2v rank 1
                        [0.3, 0.8, 0.1],   # caption 1: clip 1 ahead              -> rank 2
                        [0.5, 0.4, 0.7],   # caption 2: clips 2 and 0 ahead       -> rank 3
                        [0.2, 0.6, 0.6]])  # caption 3: tied with clip 1 (counted against) -> rank 2
    owner = torch.tensor([0, 0, 1, 2])
    m = retrieval_metrics(sim, owner)
    assert (m["t2v_r1"], m["t2v_r5"], m["t2v_r10"]) == (0.25, 1.0, 1.0)
    assert (m["t2v_median_rank"], m["t2v_mean_rank"]) == (2.0, 2.0)
    # v2t, by columns: clip 0 -> captions scored [.9 .3 .5 .2]: caption 0 at rank 1 (its best of ranks 1 and 3);
    # clip 1 -> [.1 .8 .4 .6]: caption 2 at rank 3; clip 2 -> [.2 .1 .7 .6]: caption 3 at rank 2.
    assert m["v2t_r1"] == pytest.approx(1 / 3) and m["v2t_r5"] == 1.0
    assert (m["v2t_median_rank"], m["v2t_mean_rank"]) == (2.0, 2.0)
    assert m["r_sum"] == pytest.approx(0.25 + 1 + 1 + 1 / 3 + 1 + 1)
    assert (m["captions"], m["clips"]) == (4, 3)


def test_recall_at_5_and_10_from_placed_ranks():
    # 20 clips, one caption each; caption c's own clip is placed at a chosen rank in its row.
    ranks = [1, 1, 2, 5, 6, 10, 11, 20, 3, 4, 7, 9, 12, 15, 1, 2, 8, 10, 5, 19]
    V = len(ranks)
    sim = torch.zeros(V, V)
    for c, r in enumerate(ranks):
        others = [v for v in range(V) if v != c]
        order = others[:r - 1] + [c] + others[r - 1:]  # clips in decreasing score
        sim[c, order] = torch.linspace(1, 0, V)
    m = retrieval_metrics(sim, torch.arange(V))
    assert m["t2v_r1"] == 3 / 20 and m["t2v_r5"] == 9 / 20 and m["t2v_r10"] == 15 / 20
    assert m["t2v_mean_rank"] == sum(ranks) / V
    assert m["t2v_median_rank"] == 6.5  # sorted, the 10th and 11th ranks are 6 and 7


def test_constant_scores_are_not_a_perfect_model():
    m = retrieval_metrics(torch.zeros(5, 5), torch.arange(5))
    assert m["t2v_r1"] == 0 and m["v2t_r1"] == 0 and m["t2v_median_rank"] == 5


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="nothing to rank"):
        retrieval_metrics(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="clip indices"):
        retrieval_metrics(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="no caption"):
        retrieval_metrics(torch.zeros(2, 3), torch.tensor([0, 1]))
