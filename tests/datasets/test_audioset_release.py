"""AudioSet's annotation files as users have them (real excerpts, tests/datasets/fixtures/audioset): every
copy read, every quirk skipped with its reason or refused with one clear error."""

from pathlib import Path

import pytest

from avpea_dist.datasets.labelled_clips import Segment, dedupe, hold_out
from avpea_dist.datasets.audioset.release import read_audioset, read_class_index, split_of

FIX = Path(__file__).parent / "fixtures" / "audioset"
LABELS = FIX / "class_labels_indices_noheader.csv"


def _rows(name: str, split: str = "train"):
    rows = read_audioset([f"{split}={FIX / name}"], LABELS)
    return rows.splits[split], rows.annotations["segments_files"][0]


def test_class_index_copies() -> None:
    mids, names = read_class_index(LABELS)
    assert len(mids) == 527 and mids[:2] == ["/m/09x0r", "/m/05zppz"] and names[1] == "Male speech, man speaking"
    assert mids[-1] == "/m/07hvw1" and names[-1] == "Field recording"
    mids, names = read_class_index(FIX / "class_labels_indices_talnet_head.csv")  # header, unquoted commas
    assert mids[1] == "/m/05zppz" and names[1] == "Male_speech,_man_speaking" and len(mids) == 6


def test_class_index_errors(tmp_path: Path) -> None:
    bad = tmp_path / "c.csv"
    bad.write_text("0,/m/a,A\n2,/m/b,B\n")
    with pytest.raises(ValueError, match=r"c.csv:2: expected 'index,mid,display_name' with index 1"):
        read_class_index(bad)
    bad.write_text("0,/m/a,A\n1,/m/a,B\n")
    with pytest.raises(ValueError, match="appears twice"):
        read_class_index(bad)


def test_release_format() -> None:
    entries, info = _rows("unbalanced_train_segments.csv")
    assert info["comment_lines"] == 3 and info["rows"] == 8 and info["skipped"] == {}
    assert all(isinstance(e, Segment) for e in entries)
    first = entries[0]
    assert (first.id, first.start, first.end) == ("---1_cCGK4M", 0.0, 10.0)
    assert first.labels == ("/m/01g50p", "/m/0284vy3", "/m/06d_3", "/m/07jdr", "/m/07rwm0c")
    assert entries[6].end - entries[6].start == 2.0 and len(entries[7].labels) == 7


def test_resaved_copy() -> None:
    entries, info = _rows("balanced_train_segments_resaved.csv")
    assert info["comment_lines"] == 1 and info["rows"] == 6 and all(isinstance(e, Segment) for e in entries)
    assert entries[0].labels == ("/m/09x0r", "/t/dd00088") and entries[4].id == "-275_wTLm-4"


def test_spreadsheet_copy() -> None:
    entries, info = _rows("balanced_train_segments_spreadsheet.csv")
    assert info["rows"] == 7 and info["comment_lines"] == 1
    assert info["skipped"] == {"bad id": 2, "unknown label": 1}
    mangled = [e for e in entries if isinstance(e, dict) and e["id"] == "#NAME?"]
    assert len(mangled) == 2 and "spreadsheet" in mangled[0]["reason"] and mangled[0]["start"] == 30.0
    assert entries[2].labels == ("/m/04rlf", "/m/07qwdck")  # labels spread over unquoted columns
    stray = [e for e in entries if isinstance(e, dict) and e["id"] == "-3IGxVTJvgI"]
    assert "label(s) i not in class_labels_indices_noheader.csv" in stray[0]["reason"]


def test_requoted_eval_and_fractional_start() -> None:
    entries, info = _rows("eval_segments_requoted.csv", "test")
    assert info["rows"] == 5 and all(e.labels == ("/m/0c3f7m",) for e in entries)
    assert (entries[1].start, entries[1].end) == (202.7, 212.7)


def test_copy_without_labels_refused() -> None:
    with pytest.raises(ValueError, match="none of its 4 rows has labels.*positive_labels"):
        _rows("balanced_train_segments_nolabels.csv")


def test_split_of_names() -> None:
    assert split_of("x/eval_segments.csv")[0] == "test"
    assert split_of("unbalanced_train_segments.csv")[0] == split_of("balanced_train_segments.csv")[0] == "train"
    assert split_of("test=mine.csv") == ("test", Path("mine.csv"))
    with pytest.raises(ValueError, match="train=FILE or test=FILE"):
        split_of("mine.csv")


def test_repeats_and_hold_out() -> None:
    rows = read_audioset([FIX / "unbalanced_train_segments.csv", f"test={FIX / 'unbalanced_train_segments.csv'}"],
                         LABELS)
    splits = dedupe(rows.splits)  # the same file as train and test: test keeps every row, train none
    assert all(isinstance(e, Segment) for e in splits["test"])
    assert all("repeated segment" in e["reason"] and "split 'test'" in e["reason"] for e in splits["train"])
    rows = read_audioset([FIX / "unbalanced_train_segments.csv"], LABELS)
    a, record = hold_out(rows.splits, 0.25, seed=3)
    b, _ = hold_out(rows.splits, 0.25, seed=3)
    assert a == b and len(a["val"]) == 2 and len(a["train"]) == 6 and record["videos"] == 2
    assert not {e.id for e in a["val"]} & {e.id for e in a["train"]}
    assert hold_out(rows.splits, 0.25, seed=4)[0]["val"] != a["val"]
