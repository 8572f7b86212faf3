"""AVEL's training objectives: per-segment cross-entropy, and LAVisH's BCE on the softmax."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from avpea_dist.tasks.avel.loss import bce_softmax, cross_entropy, loss_for, segment_loss


def test_bce_softmax_matches_a_hand_computation():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]]])  # one clip, two segments, three classes
    labels = torch.tensor([[0, 2]])
    terms = []
    for z, y in zip(logits[0].tolist(), labels[0].tolist()):
        total = sum(math.exp(v) for v in z)
        p = [math.exp(v) / total for v in z]
        terms += [-math.log(p[k]) if k == y else -math.log(1 - p[k]) for k in range(3)]
    expected = sum(terms) / len(terms)  # BCELoss's mean: over segments x classes
    assert bce_softmax(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_bce_softmax_equals_torchs_bce_on_the_softmax_and_stays_finite_at_the_extremes():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 29, generator=g) * 3
    labels = torch.randint(0, 29, (3, 4), generator=g)
    reference = F.binary_cross_entropy(logits.softmax(-1), F.one_hot(labels, 29).float())
    assert bce_softmax(logits, labels).item() == pytest.approx(reference.item(), rel=1e-6)
    # Where softmax rounds to exactly 0 and 1 in float32, the loss and its gradient stay finite.
    extreme = torch.tensor([[[120.0, 0.0, -120.0]]], requires_grad=True)
    loss = bce_softmax(extreme, torch.tensor([[2]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(extreme.grad).all()


def test_cross_entropy_is_the_loops_own_objective():
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(2, 5, 9, generator=g), torch.randint(0, 9, (2, 5), generator=g)
    expected = torch.nn.functional.cross_entropy(logits.reshape(10, 9), labels.reshape(10))
    assert torch.allclose(segment_loss(logits, labels), expected)
    assert cross_entropy is segment_loss and loss_for("ce") is cross_entropy and loss_for("bce_softmax") is bce_softmax
