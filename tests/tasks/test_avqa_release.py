"""The MUSIC-AVQA reader against an excerpt of the real release (tests/tasks/fixtures/musicavqa, see its
README) and against hand-made malformed records."""

import ast
import json
from pathlib import Path

import pytest

from avpea_dist.datasets.musicavqa import release
from avpea_dist.datasets.musicavqa.release import PAD, UNK, UNKNOWN_ANSWER, Question, Skip, parse_record
from avpea_dist.datasets.musicavqa.vocab import Vocab, build_vocab

FIXTURES = Path(__file__).parent / "fixtures" / "musicavqa"
ORIGINAL, UPDATE = FIXTURES / "json", FIXTURES / "json_update"


def reference_fill(record: dict) -> list[str]:
    """The reference code's loop (MUSIC-AVQA and LAVisH dataloader_avst.py), rewritten here to compare."""
    question = record["question_content"].rstrip().split(" ")
    question[-1] = question[-1][:-1]
    p = 0
    for pos in range(len(question)):
        if "<" in question[pos]:
            question[pos] = ast.literal_eval(record["templ_values"])[p]
            p += 1
    return question


def good_record(**changes) -> dict:
    rec = {"video_id": "00000086", "question_id": 28, "type": "[\"Audio-Visual\", \"Existential\"]",
           "question_content": "Is the <Object> in the video always playing?", "templ_values": "[\"violin\"]",
           "question_deleted": 0, "anser": "no"}
    rec.update(changes)
    return rec


def test_every_real_record_is_filled_as_the_reference_does():
    files = sorted(FIXTURES.glob("*/avqa-*.json"))
    assert len(files) == 5
    for path in files:
        records = json.loads(path.read_text())
        for i, rec in enumerate(records):
            parsed = parse_record(rec, i)
            assert isinstance(parsed, Question), (path, parsed)
            assert list(parsed.words) == reference_fill(rec)
            assert parsed.type == tuple(json.loads(rec["type"])) and parsed.answer == rec["anser"]


def test_release_quirks_in_the_excerpt():
    val = json.loads((UPDATE / "avqa-val.json").read_text())
    by_id = {r["question_id"]: r for r in val}
    # type and templ_values are JSON strings; the answer key is 'anser'
    assert all(isinstance(r["type"], str) and isinstance(r["templ_values"], str) and "anser" in r for r in val)
    q = {p.question_id: p for p in release.read_split(UPDATE, "val").questions}
    # two placeholders, filled in order
    two = next(r for r in val if len(json.loads(r["templ_values"])) == 2)
    slots = [i for i, tok in enumerate(two["question_content"].rstrip()[:-1].split(" ")) if "<" in tok]
    assert [q[two["question_id"]].words[i] for i in slots] == json.loads(two["templ_values"])
    # full-width question mark and a trailing space both leave a clean last word
    wide = next(r for r in val if r["question_content"].endswith("\uff1f"))
    spaced = next(r for r in val if r["question_content"].endswith(" "))
    for r in (wide, spaced):
        last = q[r["question_id"]].words[-1]
        assert last.isalpha() or last in json.loads(r["templ_values"]), last
    assert not any("<" in w or w.endswith(("?", "\uff1f")) for p in q.values() for w in p.words)
    placeholders = {tok[1:-1] for r in val for tok in r["question_content"][:-1].split() if tok.startswith("<")}
    assert placeholders >= {"Object", "LR", "LRer", "LL", "TH", "FL", "BA"}
    assert {release.video_kind(r["video_id"]) for r in by_id.values()} == {"real", "synthetic"}
    assert {p.type for p in q.values()} == set(release.QUESTION_TYPES)


def test_video_kinds():
    assert release.video_kind("00000093") == "real"
    for prefix in release.SYNTHETIC_PREFIXES:
        assert release.video_kind(prefix + "00003871") == "synthetic"
    for other in ("0000009", "xx00000093", "000000931", "my_clip"):
        assert release.video_kind(other) == "other"


def test_original_duplicates_are_skipped_and_the_update_is_clean():
    # json/ val: 27 records, 3 question ids twice with different answers -> 6 skipped, 21 kept
    original = release.read_split(ORIGINAL, "val")
    assert (original.records, len(original.questions), len(original.skipped)) == (27, 21, 6)
    assert {s.question_id for s in original.skipped} == {291, 8406, 9659}
    assert all("different content" in s.reason and "answers ['no', 'yes']" in s.reason for s in original.skipped)
    assert [s.index for s in original.skipped if s.question_id == 291] == [5, 6]
    update = release.read_split(UPDATE, "val")
    assert (update.records, len(update.questions), len(update.skipped)) == (24, 24, 0)
    # json/ test: 5 ids twice (one rewritten by the update, one dropped by it) -> 10 skipped of 33
    test = release.read_split(ORIGINAL, "test")
    assert (test.records, len(test.questions), len(test.skipped)) == (33, 23, 10)
    fixed = {q.question_id: q for q in release.read_split(UPDATE, "test").questions}
    assert fixed[27558].question == "What kind of instrument is the leftest instrument"
    assert 47300 not in fixed
    for split in (original, update, test):
        assert len(split.questions) + len(split.skipped) == split.records


def test_identical_duplicate_keeps_the_first():
    rec = good_record()
    out = release.parse_split([rec, dict(rec), good_record(question_id=29)], "val")
    assert [q.question_id for q in out.questions] == [28, 29]
    assert out.skipped == (Skip(1, "00000086", 28, "duplicate of record 0 (question_id 28)"),)


@pytest.mark.parametrize("changes, reason", [
    ({"anser": None}, "anser None is empty"),
    ({"type": "[\"Audio\", \"Counting\""}, "type '[\"Audio\", \"Counting\"' is not a JSON list"),
    ({"type": "[\"Audio\", \"Existential\"]"}, "is not one of the nine"),
    ({"type": "Audio"}, "type 'Audio' is not a JSON list"),
    ({"templ_values": "[violin]"}, "templ_values '[violin]' is not a JSON list"),
    ({"templ_values": "[1]"}, "is not a list of non-empty strings"),
    ({"templ_values": "[]"}, "1 placeholders in 'Is the <Object> in the video always playing?' but 0 templ_values"),
    ({"templ_values": "[\"violin\", \"piano\"]"}, "1 placeholders"),
    ({"question_content": "Is the <Object> in the video always playing"}, "does not end with '?'"),
    ({"question_content": "Is the  <Object> playing?"}, "has an empty word"),
    ({"question_content": "   "}, "question_content is empty"),
    ({"question_id": "28"}, "question_id '28' is not an integer"),
    ({"question_id": True}, "question_id True is not an integer"),
    ({"video_id": "../x"}, "video_id '../x' must be"),
    ({"question_deleted": 1}, "question_deleted is 1"),
])
def test_malformed_records_are_skipped_with_their_reason(changes, reason):
    out = parse_record(good_record(**changes), 7, "test")
    assert isinstance(out, Skip) and out.index == 7, out
    assert reason in out.reason, out.reason


def test_missing_keys_and_non_objects():
    rec = good_record()
    del rec["anser"], rec["templ_values"]
    out = parse_record(rec, 0)
    assert out == Skip(0, "00000086", 28, "missing key(s) templ_values, anser")
    assert out.to_json() == {"id": "00000086", "question_id": 28, "reason": "missing key(s) templ_values, anser"}
    assert parse_record(["00000086"], 3) == Skip(3, "", None, "record is a list, not an object")
    mixed = release.parse_split([good_record(), 5, good_record(question_id=30, type="[]")], "train")
    assert len(mixed.questions) == 1 and len(mixed.skipped) == 2 and mixed.records == 3


def test_already_decoded_lists_are_accepted():
    out = parse_record(good_record(type=["Audio", "Counting"], templ_values=["violin"]), 0)
    assert isinstance(out, Question) and out.type == ("Audio", "Counting")


def test_unreadable_files_are_one_line_errors(tmp_path):
    with pytest.raises(release.ReleaseError, match="avqa-train.json is missing"):
        release.read_split(tmp_path, "train")
    (tmp_path / "avqa-val.json").write_text("[{")
    with pytest.raises(release.ReleaseError, match="not a JSON file"):
        release.read_split(tmp_path, "val")
    (tmp_path / "avqa-test.json").write_text("{}")
    with pytest.raises(release.ReleaseError, match="expected a JSON list"):
        release.read_split(tmp_path, "test")
    with pytest.raises(ValueError, match="split 'dev'"):
        release.read_split(tmp_path, "dev")


def test_videos_grouped_per_split_and_shared_across_splits():
    rel = {s: release.read_split(UPDATE, s) for s in ("val", "test")}
    groups = {s: release.group_by_video(sq.questions) for s, sq in rel.items()}
    assert sum(map(len, groups["test"].values())) == len(rel["test"].questions)
    # the excerpt holds every val and test question of video 00000098 (1 in val, 3 in test, file order)
    assert [q.question_id for q in groups["val"]["00000098"]] == [13769]
    assert [q.question_id for q in groups["test"]["00000098"]] == [13400, 34188, 39147]
    assert release.shared_videos(rel) == {("val", "test"): 2}
    sample = [q.to_json() for q in groups["test"]["00000098"]]
    assert set(sample[0]) == {"question_id", "question", "answer", "type"} and isinstance(sample[0]["type"], list)


def test_full_release_folder_reads_three_splits(tmp_path):
    for split in release.SPLITS:
        (tmp_path / f"avqa-{split}.json").write_text((ORIGINAL / f"avqa-{split}.json").read_text())
    rel = release.read_release(tmp_path)
    assert list(rel) == list(release.SPLITS) and rel["train"].records == 20


def test_vocabulary_from_train_only():
    train = release.read_split(ORIGINAL, "train").questions
    vocab = build_vocab(train)
    assert vocab.words[:2] == (PAD, UNK) and list(vocab.words[2:]) == sorted(vocab.words[2:])
    assert list(vocab.answers) == sorted({q.answer for q in train})
    assert vocab.max_len == max(len(q.words) for q in train)
    test = release.read_split(UPDATE, "test").questions
    unknown = [q for q in test if q.answer not in vocab.answers]
    assert unknown, "the excerpt's test split has answers train never gave"
    assert all(vocab.answer_label(q.answer) == UNKNOWN_ANSWER for q in unknown)
    assert vocab.answer_label(train[0].answer) == vocab.answers.index(train[0].answer)
    ids = vocab.encode_questions(test)
    assert all(len(row) == vocab.max_len for row in ids)
    assert vocab.encode_question(["How", "zzz-never-seen"]) == [vocab.words.index("How"), 1] + [0] * (vocab.max_len - 2)
    assert len(vocab.encode_question(["How"] * (vocab.max_len + 3))) == vocab.max_len
    assert Vocab.from_json(json.loads(json.dumps(vocab.to_json()))) == vocab


def test_vocabulary_refuses_bad_input():
    with pytest.raises(ValueError, match="empty train split"):
        build_vocab([])
    with pytest.raises(ValueError, match="must start with"):
        Vocab(("a", "b"), ("yes",), 3)
    with pytest.raises(ValueError, match="unique"):
        Vocab((PAD, UNK, "a", "a"), ("yes",), 3)
    with pytest.raises(ValueError, match="needs 'words'"):
        Vocab.from_json({"words": []})


def test_fill_question_on_release_templates():
    # three real templates: full-width mark, trailing space after '?', two placeholders
    assert release.fill_question("How many sounding <Object> in the video\uff1f", ["violin"]) == \
        ("How", "many", "sounding", "violin", "in", "the", "video")
    assert release.fill_question("What kind of instrument is the <LRer> instrument? ", ["leftest"])[-2:] == \
        ("leftest", "instrument")
    assert release.fill_question("Is the instrument on the <LR> more rhythmic than the instrument on the <LR>?",
                                 ["left", "right"]).count("left") == 1
    with pytest.raises(ValueError, match="2 placeholders"):
        release.fill_question("Is the <LR> louder than the <LR>?", ["left"])
