"""The AVQA head (AVST design) on small random encoder outputs: shapes, per-video token reuse, gradients and
the frame-matching option."""

import pytest
import torch
import torch.nn.functional as F

from avpea_dist.tasks.avqa.head import AVQAHead, AVQAHeadConfig, FeatureStandardise, avqa_loss, match_labels
from avpea_dist.datasets.musicavqa.release import UNKNOWN_ANSWER

V, T, N, D, L, Q = 3, 4, 6, 32, 7, 5  # videos, segments, patches, token width, question length, questions


def small_config(**changes) -> AVQAHeadConfig:
    cfg = dict(dim=D, vocab_size=20, num_answers=9, hidden=16, word_dim=8, heads=4, dropout=0.1)
    cfg.update(changes)
    return AVQAHeadConfig(**cfg)


def batch(seed: int = 0, videos: int = V):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(videos, T, D, generator=g)
    visual = torch.randn(videos, T, D, generator=g)
    patches = torch.randn(videos, T, N, D, generator=g)
    questions = torch.randint(2, 20, (Q, L), generator=g)
    questions[:, -2:] = 0  # padding at the end, as the vocabulary encodes it
    video_index = torch.tensor([0, 2, 2, 1, 0])[:Q] % videos
    return audio, visual, patches, questions, video_index


def test_output_shapes():
    torch.manual_seed(0)
    head = AVQAHead(small_config(match_weight=0.5))
    out = head(*batch())
    assert out.logits.shape == (Q, 9)
    assert out.match_logits.shape == (2 * V * T, 2)
    assert match_labels(out.match_logits).tolist() == [1] * (V * T) + [0] * (V * T)
    assert AVQAHead(small_config())(*batch()).match_logits is None  # matching off: no matching MLP at all
    assert head(*batch(videos=1)).match_logits is None  # one video: no other video for negatives


def test_each_question_uses_only_its_own_videos_tokens():
    torch.manual_seed(0)
    head = AVQAHead(small_config(match_weight=0.5)).eval()
    audio, visual, patches, questions, index = batch()
    together = head(audio, visual, patches, questions, index).logits
    for qi in range(Q):
        v = int(index[qi])
        alone = head(audio[v:v + 1], visual[v:v + 1], patches[v:v + 1], questions[qi:qi + 1],
                     torch.zeros(1, dtype=torch.long)).logits
        torch.testing.assert_close(together[qi:qi + 1], alone, rtol=1e-5, atol=1e-6)
    # changing a video no question points to leaves every answer unchanged
    unused = torch.tensor([0, 0, 2, 2, 0])
    other = audio.clone()
    other[1] += 5
    torch.testing.assert_close(head(audio, visual, patches, questions, unused).logits,
                               head(other, visual, patches, questions, unused).logits)


@pytest.mark.parametrize("match_weight", [0.0, 0.5])
def test_gradients_reach_every_parameter(match_weight):
    torch.manual_seed(0)
    head = AVQAHead(small_config(match_weight=match_weight)).train()
    labels = torch.tensor([1, 4, 0, 8, 3])
    avqa_loss(head(*batch()), labels, match_weight).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_matching_loss_option():
    torch.manual_seed(0)
    head = AVQAHead(small_config(match_weight=0.5)).eval()
    out = head(*batch())
    labels = torch.tensor([1, 4, 0, 8, 3])
    answer_only = F.cross_entropy(out.logits, labels)
    matching = F.cross_entropy(out.match_logits, match_labels(out.match_logits))
    torch.testing.assert_close(avqa_loss(out, labels, 0.5), answer_only + 0.5 * matching)
    torch.testing.assert_close(avqa_loss(out, labels, 0.0), answer_only)
    # Negatives pair each video's audio with the next video's visual tokens: with three identical videos a
    # negative scores exactly like a positive; with distinct videos it does not.
    a, v, p, qs, idx = batch()
    same = head(a[:1].expand(V, -1, -1), v[:1].expand(V, -1, -1), p[:1].expand(V, -1, -1, -1), qs, idx)
    torch.testing.assert_close(same.match_logits[:V * T], same.match_logits[V * T:])
    assert not torch.allclose(out.match_logits[:V * T], out.match_logits[V * T:])


def test_unknown_answers_are_left_out_of_the_loss():
    torch.manual_seed(0)
    out = AVQAHead(small_config()).eval()(*batch())
    labels = torch.tensor([1, UNKNOWN_ANSWER, 0, UNKNOWN_ANSWER, 3])
    keep = torch.tensor([0, 2, 4])
    torch.testing.assert_close(avqa_loss(out, labels), F.cross_entropy(out.logits[keep], labels[keep]))
    nothing = avqa_loss(out, torch.full((Q,), UNKNOWN_ANSWER))
    assert nothing.item() == 0.0 and nothing.requires_grad


def test_bad_shapes_and_settings_are_refused():
    head = AVQAHead(small_config())
    a, v, p, qs, idx = batch()
    with pytest.raises(ValueError, match="visual CLS"):
        head(a, v[:, :2], p, qs, idx)
    with pytest.raises(ValueError, match="visual patches"):
        head(a, v, p[..., :8], qs, idx)
    with pytest.raises(ValueError, match="video_index"):
        head(a, v, p, qs, idx[:2])
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        head(a, v, p, qs, torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match="divisible by heads"):
        AVQAHead(small_config(hidden=18))
    with pytest.raises(ValueError, match="match_weight"):
        AVQAHead(small_config(match_weight=-1.0))


def test_feature_standardise_starts_from_the_first_training_batch_then_keeps_its_values():
    g = torch.Generator().manual_seed(0)
    x = 7.0 + 0.2 * torch.randn(5, 10, D, generator=g)  # a large shared component, small differences
    x[..., 0] = 0.0  # a constant channel (an ablation's zeros) keeps scale 1
    norm = FeatureStandardise(D)
    torch.testing.assert_close(norm.eval()(x), x)  # identity before any training batch
    y = norm.train()(x)
    flat = y.flatten(0, 1)[:, 1:]
    torch.testing.assert_close(flat.mean(0), torch.zeros(D - 1), atol=1e-4, rtol=0)
    torch.testing.assert_close(flat.std(0, unbiased=False), torch.ones(D - 1), atol=1e-3, rtol=0)
    assert float(norm.scale[0]) == 1.0
    # Later batches, and a copy restored from its state dict (a resume), use the same values: no re-initialising.
    restored = FeatureStandardise(D)
    restored.load_state_dict(norm.state_dict())
    z = torch.randn(2, 3, D, generator=g)
    torch.testing.assert_close(restored.train()(z), norm(z))
    torch.testing.assert_close(norm(z), (z - norm.shift) * norm.scale)
    # Held, not learnt: no gradient reaches shift or scale (the input still gets its gradient).
    z.requires_grad_(True)
    norm(z).square().sum().backward()
    assert norm.shift.grad is None and norm.scale.grad is None and z.grad is not None
