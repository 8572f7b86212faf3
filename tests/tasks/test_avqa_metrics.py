"""MUSIC-AVQA accuracies and the majority baseline against hand-made tables."""

import pytest

from avpea_dist.tasks.avqa.metrics import (TypeAccuracy, format_table, majority_answers, majority_baseline,
                                           type_key)
from avpea_dist.datasets.musicavqa.release import UNKNOWN_ANSWER, Question

A_CNT, A_CMP = ("Audio", "Counting"), ("Audio", "Comparative")
V_CNT, V_LOC = ("Visual", "Counting"), ("Visual", "Location")
AV_EXT, AV_CNT, AV_LOC = ("Audio-Visual", "Existential"), ("Audio-Visual", "Counting"), ("Audio-Visual", "Location")
AV_CMP, AV_TMP = ("Audio-Visual", "Comparative"), ("Audio-Visual", "Temporal")

# (type, prediction, label) per question, shuffled across types so that nothing can rely on order.
# Hand count, correct / total per type:
#   audio_counting 2/3, audio_comparative 0/1, visual_counting 2/2, visual_location 1/2,
#   audio_visual_existential 3/4, audio_visual_counting 0/1, audio_visual_location no question,
#   audio_visual_comparative 1/2 (the miss is an answer unknown to train: label -1, predicted 0),
#   audio_visual_temporal 1/3.
# Pooled over questions: audio (2+0)/(3+1) = 0.5 (the mean of its two kinds would be 1/3),
#   visual (2+1)/(2+2) = 0.75, audio_visual (3+0+1+1)/(4+1+2+3) = 0.5, overall (2+3+5)/(4+4+10) = 10/18.
TABLE = [
    (A_CNT, 1, 1), (AV_EXT, 0, 0), (V_LOC, 3, 4), (A_CNT, 2, 2), (AV_TMP, 5, 5), (AV_EXT, 1, 1),
    (V_CNT, 6, 6), (A_CMP, 0, 1), (AV_CMP, 0, UNKNOWN_ANSWER), (AV_EXT, 0, 1), (A_CNT, 2, 3), (V_LOC, 4, 4),
    (AV_TMP, 5, 6), (AV_EXT, 1, 1), (AV_CNT, 2, 7), (V_CNT, 7, 7), (AV_CMP, 3, 3), (AV_TMP, 6, 5),
]


def table_accuracy() -> TypeAccuracy:
    acc = TypeAccuracy()
    types, preds, labels = zip(*TABLE)
    acc.add_predictions(types, preds, labels)
    return acc


def test_per_type_and_pooled_accuracies_match_the_hand_count():
    report = table_accuracy().report()
    expected = {
        "audio_counting": 2 / 3, "audio_comparative": 0.0, "visual_counting": 1.0, "visual_location": 0.5,
        "audio_visual_existential": 0.75, "audio_visual_counting": 0.0, "audio_visual_location": None,
        "audio_visual_comparative": 0.5, "audio_visual_temporal": 1 / 3,
        "audio": 0.5, "visual": 0.75, "audio_visual": 0.5, "overall": 10 / 18,
    }
    assert report.keys() == expected.keys()
    for key, value in expected.items():
        assert report[key] == (None if value is None else pytest.approx(value)), key
    assert table_accuracy().questions()["overall"] == 18
    assert table_accuracy().questions()["audio_visual_location"] == 0


def test_counts_sum_across_ranks():
    # Two "ranks" each score half the table; summing their count vectors gives the whole table.
    first, second = TypeAccuracy(), TypeAccuracy()
    for i, (t, p, y) in enumerate(TABLE):
        (first if i % 2 else second).add_predictions([t], [p], [y])
    summed = [a + b for a, b in zip(first.counts, second.counts)]
    assert TypeAccuracy.from_counts(summed).report() == table_accuracy().report()
    assert first.merge(second).report() == table_accuracy().report()
    assert len(first.counts) == 18


def test_bad_input_is_refused():
    acc = TypeAccuracy()
    with pytest.raises(ValueError, match="not one of the nine"):
        acc.add(("Audio", "Location"), True)
    with pytest.raises(ValueError, match="one per question"):
        acc.add_predictions([A_CNT], [1, 2], [1])
    with pytest.raises(ValueError, match="expected 18 counts"):
        TypeAccuracy.from_counts([0] * 9)
    with pytest.raises(ValueError, match="correct <= total"):
        TypeAccuracy.from_counts([1] + [0] * 17)
    assert TypeAccuracy().report()["overall"] is None  # nothing scored: no number, not 0


def q(qid: int, qtype: tuple[str, str], answer: str) -> Question:
    return Question(qid, "00000001", ("How", "many"), answer, qtype)


def test_majority_baseline_by_hand():
    train = [q(1, A_CNT, "two"), q(2, A_CNT, "one"), q(3, A_CNT, "two"),
             q(4, V_LOC, "right"), q(5, V_LOC, "left"),            # a tie: the alphabetically first, "left"
             q(6, AV_EXT, "yes"), q(7, AV_EXT, "no"), q(8, AV_EXT, "yes")]
    majority = majority_answers(train)
    assert majority == {A_CNT: "two", V_LOC: "left", AV_EXT: "yes"}
    test = [q(10, A_CNT, "two"), q(11, A_CNT, "three"),            # audio_counting 1/2
            q(12, V_LOC, "left"), q(13, V_LOC, "left"), q(14, V_LOC, "right"),  # visual_location 2/3
            q(15, AV_EXT, "no"),                                     # audio_visual_existential 0/1
            q(16, AV_TMP, "middle")]                                 # no temporal question in train: 0/1
    report = majority_baseline(majority, test).report()
    assert report["audio_counting"] == pytest.approx(0.5)
    assert report["visual_location"] == pytest.approx(2 / 3)
    assert report["audio_visual_existential"] == 0.0 and report["audio_visual_temporal"] == 0.0
    # pooled: audio 1/2, visual 2/3, audio_visual 0/2, overall (1+2+0)/7
    assert report["audio"] == pytest.approx(0.5) and report["visual"] == pytest.approx(2 / 3)
    assert report["audio_visual"] == 0.0 and report["overall"] == pytest.approx(3 / 7)


def test_table_prints_every_row_in_percent():
    text = format_table({"model": table_accuracy(), "empty": TypeAccuracy()})
    lines = text.splitlines()
    assert lines[0].split() == ["model", "empty"] and len(lines) == 1 + 9 + 3 + 1
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["overall"] == ["55.56", "-"] and rows["audio_visual_location"] == ["-", "-"]
    assert rows[type_key(V_LOC)] == ["50.00", "-"]


def test_each_answer_is_scored_with_its_own_type_whatever_the_batching():
    """The reference looks types up by batch index in the test file; here the type travels with the question:
    any order and any batch sizes give the hand count."""
    import random

    rows = list(TABLE)
    random.Random(0).shuffle(rows)
    acc, i = TypeAccuracy(), 0
    for size in (1, 4, 2, 7, 4):  # uneven batches covering all 18 questions
        types, preds, labels = zip(*rows[i:i + size])
        acc.add_predictions(types, preds, labels)
        i += size
    assert i == len(TABLE) and acc.counts == table_accuracy().counts
    # the same predictions scored with the types of other questions (the batch-index mistake) differ
    wrong = TypeAccuracy()
    wrong.add_predictions([t for t, _, _ in TABLE], [p for _, p, _ in rows], [y for _, _, y in rows])
    assert wrong.report() != table_accuracy().report()


def test_majority_from_manifest_histograms_matches_the_question_lists():
    from avpea_dist.tasks.avqa.metrics import majority_from_histograms

    train = [q(1, A_CNT, "two"), q(2, A_CNT, "one"), q(3, A_CNT, "two"), q(4, V_LOC, "right"), q(5, V_LOC, "left")]
    test = [q(10, A_CNT, "two"), q(11, A_CNT, "three"), q(12, V_LOC, "left"), q(13, V_LOC, "right"),
            q(14, AV_TMP, "left")]

    def hist(questions):
        out: dict = {}
        for x in questions:
            out.setdefault(x.type, {}).setdefault(x.answer, 0)
            out[x.type][x.answer] += 1
        return out

    got = majority_from_histograms(hist(train), hist(test))
    assert got.counts == majority_baseline(majority_answers(train), test).counts
    # by hand: audio_counting 1/2 ('two'), visual_location 1/2 (tie -> 'left'), temporal 0/1 (never in train)
    report = got.report()
    assert report["audio_counting"] == 0.5 and report["visual_location"] == 0.5
    assert report["audio_visual_temporal"] == 0.0 and report["overall"] == pytest.approx(2 / 5)
