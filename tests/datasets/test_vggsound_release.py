"""VGGSound's vggsound.csv (real excerpt, tests/datasets/fixtures/vggsound): quoted labels kept verbatim, bad
rows skipped with their reason."""

from pathlib import Path

import pytest

from avpea_dist.datasets.labelled_clips import Segment
from avpea_dist.datasets.vggsound.release import read_vggsound

FIX = Path(__file__).parent / "fixtures" / "vggsound" / "vggsound.csv"


def test_release_excerpt() -> None:
    rows = read_vggsound(FIX)
    assert not rows.multilabel and rows.classes == sorted(rows.classes) == rows.class_names
    assert len(rows.splits["train"]) == 9 and len(rows.splits["test"]) == 3
    first = rows.splits["test"][0]
    assert (first.id, first.start, first.end, first.labels) == ("---g-f_I2yQ", 1.0, 11.0, ("people marching",))
    assert "bee, wasp, etc. buzzing" in rows.classes and "female speech, woman speaking" in rows.classes


def test_bad_rows_and_lost_quotes(tmp_path: Path) -> None:
    f = tmp_path / "vggsound.csv"
    f.write_text("# YouTube ID,start seconds,label,split\n"
                 "--9O4XZOge4,30,female speech, woman speaking,train\n"  # quotes lost: same label
                 "#NAME?,30,playing piano,train\n"
                 "-0lrq0dgfnQ,x,chimpanzee pant-hooting,train\n"
                 "-0p7hKXZ1ww,30,lighting firecrackers,validation\n"
                 "--U7joUcTCo,0,people coughing,test\n")
    rows = read_vggsound(f)
    train = rows.splits["train"]
    assert isinstance(train[0], Segment) and train[0].labels == ("female speech, woman speaking",)
    reasons = [e["reason"] for e in train[1:]]
    assert "spreadsheet" in reasons[0] and "not a number" in reasons[1] and "neither 'train' nor 'test'" in reasons[2]
    assert rows.annotations["skipped"] == {"bad id": 1, "bad split": 1, "bad start": 1}
    assert rows.annotations["comment_lines"] == 1 and rows.annotations["rows"] == 5


def test_not_vggsound(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text("a,b\n")
    with pytest.raises(ValueError, match="pass VGGSound's vggsound.csv"):
        read_vggsound(f)
    with pytest.raises(FileNotFoundError, match="--csv"):
        read_vggsound(tmp_path / "none.csv")
