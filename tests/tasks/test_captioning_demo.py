"""The captioning demo's bar check: which captions name the clip's picture and sound (fast, no training)."""

from avpea_dist.tasks.captioning.demo import NAMES_BOTH_BAR, _named_share, caption_words

TRUTH = {"a": {"colour": "red", "shape": "circle", "side": "left", "pitch": "high", "sound": "chord"},
         "b": {"colour": "blue", "shape": "square", "side": "right", "pitch": "low", "sound": "beeping"}}


def test_words_drop_punctuation_and_case():
    assert caption_words("On the left, a red circle appears.") == {"on", "the", "left", "a", "red", "circle",
                                                                  "appears"}


def test_named_share_counts_picture_sound_and_both_by_the_ground_truth():
    captions = [
        {"id": "a", "caption": "On the left, a red circle appears as a high chord plays."},  # both
        {"id": "b", "caption": "A blue square on the left while a low beeping plays."},  # wrong side
        {"id": "unknown", "caption": "a red circle"},  # not in the ground truth: not counted
    ]
    got = _named_share(captions, TRUTH)
    assert got == {"captions": 2, "seen": 1, "heard": 2, "both": 1, "share_both": 0.5}
    assert _named_share([], TRUTH)["share_both"] == 0.0
    assert 0 < NAMES_BOTH_BAR <= 1
