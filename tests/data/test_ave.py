"""Annotation parsing: the AVE format's quirks, and malformed lines named by file and line."""

from pathlib import Path

import pytest

from avpea_dist.data.ave import AnnotationError, read_ave

HEADER = "Category&VideoID&Quality&StartTime&EndTime\n"


def _write(root: Path, ann: str, train: str, val: str = "", test: str = "") -> Path:
    (root / "AVE").mkdir(parents=True, exist_ok=True)
    for name, body in (("Annotations.txt", ann), ("trainSet.txt", train), ("valSet.txt", val), ("testSet.txt", test)):
        (root / name).write_text(HEADER + body)
    return root


def test_real_quirks_ids_categories_labels(tmp_path: Path) -> None:
    lines = ("Race car, auto racing&-0A9suni5YA&good&0&10\n"
             "Frying (food)&_xY-z_9&good&3&7\n"
             "Church bell&RUhOCu3LNXM&bad&9&10\r\n\n")
    _write(tmp_path, lines, lines.splitlines(keepends=True)[0] + lines.splitlines(keepends=True)[1],
           lines.splitlines(keepends=True)[2])
    classes, splits = read_ave(tmp_path)
    assert classes == ["Church bell", "Frying (food)", "Race car, auto racing", "background"]
    assert [c.id for c in splits["train"]] == ["-0A9suni5YA", "_xY-z_9"]
    assert splits["val"][0].split == "val" and splits["test"] == []
    fry = splits["train"][1]
    assert fry.labels(classes) == [3, 3, 3, 1, 1, 1, 1, 3, 3, 3]
    assert splits["train"][0].labels(classes) == [2] * 10
    assert splits["val"][0].labels(classes) == [3] * 9 + [0]


@pytest.mark.parametrize("bad, match", [
    ("Bell&abc&good&0\n", "expected 5 '&'-separated fields"),
    ("Bell&abc&good&x&3\n", "whole seconds"),
    ("Bell&abc&good&5&5\n", "StartTime < EndTime"),
    ("Bell&abc&good&0&11\n", "StartTime < EndTime"),
    ("Bell&a.b&good&0&3\n", "no dots"),
    ("&abc&good&0&3\n", "empty category"),
    ("background&abc&good&0&3\n", "reserved"),
])
def test_malformed_line_names_file_and_line(tmp_path: Path, bad: str, match: str) -> None:
    _write(tmp_path, "Bell&ok1&good&0&3\n", "Bell&ok1&good&0&3\n" + bad)
    with pytest.raises(AnnotationError, match=match) as e:
        read_ave(tmp_path)
    assert f"{tmp_path / 'trainSet.txt'}:3" in str(e.value)


def test_clip_in_two_splits_and_missing_files(tmp_path: Path) -> None:
    _write(tmp_path, "Bell&ok1&good&0&3\n", "Bell&ok1&good&0&3\n", "Bell&ok1&good&0&3\n")
    with pytest.raises(AnnotationError, match="also listed in trainSet.txt"):
        read_ave(tmp_path)
    (tmp_path / "testSet.txt").unlink()
    (tmp_path / "valSet.txt").write_text(HEADER)
    with pytest.raises(FileNotFoundError, match="testSet.txt is missing"):
        read_ave(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        read_ave(tmp_path / "nope")
