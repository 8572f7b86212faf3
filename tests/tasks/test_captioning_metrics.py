"""Caption metrics against values worked out by hand and against pycocoevalcap's scorers run separately;
METEOR reported as unavailable (never 0) where Java is absent."""

import math
import shutil

import pytest

from avpea_dist.tasks.captioning.metrics import python_tokenize, score_captions, tokenize

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="Java runs the PTB tokenizer and METEOR")


@pytest.mark.slow
def test_bleu4_and_rouge_l_by_hand():
    # One clip. Candidate 'a b c d e', reference 'a b c d f': clipped n-gram precisions 4/5, 3/4, 2/3, 1/2,
    # equal lengths (no brevity penalty): BLEU-4 = (4/5 * 3/4 * 2/3 * 1/2) ** (1/4).
    # ROUGE-L: LCS 4, precision = recall = 4/5, F(beta=1.2) = 0.8.
    s = score_captions({"v1": ["a b c d f"]}, {"v1": "a b c d e"})
    assert s["bleu4"] == pytest.approx(0.2 ** 0.25, rel=1e-6)
    assert s["bleu1"] == pytest.approx(0.8, rel=1e-6)
    assert s["rouge_l"] == pytest.approx(0.8, rel=1e-6)
    # Two references: ROUGE-L takes the best precision and the best recall over them.
    # 'a b x' (LCS 2 of 'a b c d e': P 2/5, R 2/3), 'c d e f g h' (LCS 3: P 3/5, R 1/2) -> P 3/5, R 2/3.
    s = score_captions({"v1": ["a b x", "c d e f g h"]}, {"v1": "a b c d e"})
    p, r, b = 3 / 5, 2 / 3, 1.2
    assert s["rouge_l"] == pytest.approx((1 + b * b) * p * r / (r + b * b * p), rel=1e-6)


def test_bleu_brevity_penalty_by_hand():
    # Candidate of 4 words, closest reference of 6: BP = exp(1 - 6/4); all n-grams match.
    s = score_captions({"v1": ["w x y z u v"]}, {"v1": "w x y z"})
    assert s["bleu4"] == pytest.approx(math.exp(1 - 6 / 4), rel=1e-6)


HAND_SET = {
    "vid_A-1_0_10": (["A blue checkerboard on the left while a high chord plays.",
                      "a blue checkerboard at left, and a high chord is playing"],
                     "a blue checkerboard on the left while a low chord plays"),
    "vid-B_2_30_40": (["A red disc in the middle and a dog barks."], "a red disc in the middle while a dog barks"),
    "C_x": (["a green stripe at the top while a low tone hums"], "a yellow ring on the right"),
    "d": (["a yellow ring on the right as a bell rings twice", "bells ring twice near a yellow ring"],
          "a yellow ring on the right as a bell rings"),
}


@pytest.mark.slow
@needs_java
def test_all_metrics_equal_pycocoevalcap_run_separately():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    refs = {k: v[0] for k, v in HAND_SET.items()}
    cands = {k: v[1] for k, v in HAND_SET.items()}
    ours = score_captions(refs, cands)
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    res = tok.tokenize({k: [{"caption": c}] for k, c in cands.items()})
    assert ours["bleu4"] == pytest.approx(Bleu(4).compute_score(gts, res, verbose=0)[0][3], rel=1e-9)
    assert ours["rouge_l"] == pytest.approx(Rouge().compute_score(gts, res)[0], rel=1e-9)
    assert ours["cider"] == pytest.approx(Cider().compute_score(gts, res)[0], rel=1e-9)
    assert ours["meteor"] == pytest.approx(Meteor().compute_score(gts, res)[0], rel=1e-9)
    assert 0 < ours["meteor"] < 1 and ours["cider"] > 0 and ours["notes"]["tokenizer"].startswith("PTB")
    # A perfect candidate set scores BLEU-4 = 1 (up to pycocoevalcap's smoothing constants) and ROUGE-L = 1.
    perfect = score_captions(refs, {k: v[0] for k, v in refs.items()})
    assert perfect["bleu4"] == pytest.approx(1.0, abs=1e-6) and perfect["rouge_l"] == pytest.approx(1.0)


@needs_java
def test_python_tokenizer_matches_ptb_on_caption_text():
    caps = {"1": ["A dog's bark -- don't stop... (loud)", "a high-pitched tone; then: bells' ring? 3.5 kHz",
                  "A blue checkerboard on the LEFT while a high chord plays.", "it's a car_horn, 'quoted' \"twice\""]}
    ptb, which = tokenize(caps)
    assert which == "ptb"
    assert [python_tokenize(c) for c in caps["1"]] == ptb["1"]


def test_without_java_meteor_is_unavailable_not_zero(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a real environment without a java executable
    s = score_captions({k: v[0] for k, v in HAND_SET.items()}, {k: v[1] for k, v in HAND_SET.items()})
    assert s["meteor"] is None and "unavailable" in s["notes"]["meteor"]
    assert "default-jre-headless" in s["notes"]["tokenizer"]
    assert s["bleu4"] > 0 and s["cider"] > 0


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="exactly once"):
        score_captions({"a": ["x"], "b": ["y"]}, {"a": "x"})
    with pytest.raises(ValueError, match="no reference"):
        score_captions({"a": []}, {"a": "x"})
    with pytest.raises(ValueError, match="no captions"):
        score_captions({}, {})
