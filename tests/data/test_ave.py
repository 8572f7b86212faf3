"""Annotation parsing on an excerpt of the real AVE files: repeated ids, the zero-duration record,
headers present or not, class-grouped order; malformed lines named by file and line."""

import shutil
from collections import Counter
from pathlib import Path

import pytest

from avpea_dist.datasets.ave.release import AnnotationError, Clip, read_ave
from avpea_dist.data.plan import make_plan, task_shards

HEADER = "Category&VideoID&Quality&StartTime&EndTime\n"
REAL = Path(__file__).parent / "fixtures" / "ave_real"


def real_copy(dest: Path, strip_header: tuple[str, ...] = ()) -> Path:
    """The real excerpt in ``dest``, with the header removed from the files named."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in REAL.glob("*.txt"):
        text = f.read_text()
        (dest / f.name).write_text(text.removeprefix(HEADER) if f.name in strip_header else text)
    return dest


def _write(root: Path, ann: str, train: str, val: str = "", test: str = "") -> Path:
    (root / "AVE").mkdir(parents=True, exist_ok=True)
    for name, body in (("Annotations.txt", ann), ("trainSet.txt", train), ("valSet.txt", val), ("testSet.txt", test)):
        (root / name).write_text(HEADER + body)
    return root


def test_real_excerpt_every_record_is_a_sample(tmp_path: Path) -> None:
    classes, splits = read_ave(real_copy(tmp_path / "a"))
    assert {k: len(v) for k, v in splits.items()} == {"train": 12, "val": 5, "test": 4}
    assert classes == ["Banjo", "Church bell", "Female speech, woman speaking", "Male speech, man speaking",
                       "Mandolin", "Ukulele", "background"]
    records = [c for clips in splits.values() for c in clips]
    ids = Counter(c.id for c in records)
    assert ids["0f_iTO5t3hU"] == 3 and ids["3tsi7DKGrWQ"] == 2 and len(ids) == 15
    keys = [c.key for c in records]
    assert len(set(keys)) == len(keys) and all("." not in k and "/" not in k for k in keys)
    bg = classes.index("background")
    triple = [c for c in records if c.id == "0f_iTO5t3hU"]
    assert [(c.split, c.category) for c in triple] == [("train", "Ukulele"), ("train", "Banjo"), ("test", "Mandolin")]
    assert [c.labels(classes)[0] for c in triple] == [classes.index(k) for k in ("Ukulele", "Banjo", "Mandolin")]
    male, female = (c for c in records if c.id == "0i24WckNCeE")
    assert male.labels(classes) == [bg] * 3 + [classes.index(male.category)] * 7
    assert female.labels(classes) == [bg] * 3 + [classes.index(female.category)] * 7
    zero = next(c for c in records if c.id == "VWi2ENBuTbw")
    assert zero.zero_duration and zero.labels(classes) == [bg] * 10 and zero.split == "train"
    assert splits["train"][1] == Clip("VWi2ENBuTbw", "Church bell", "good", 0, 0, "train", 1)
    # Header-less copies (any file) read the same records; no data line is taken for a header.
    assert read_ave(real_copy(tmp_path / "b", ("Annotations.txt", "testSet.txt", "valSet.txt"))) == (classes, splits)


def test_shuffle_mixes_classes_and_is_seeded() -> None:
    grouped = {"train": [Clip(f"v{k}_{i}", f"class {k}", "good", 0, 10, "train", 100 * k + i)
                         for k in range(28) for i in range(100)]}
    plan = make_plan(grouped, 128, order_seed=0)
    assert [len(s.clips) for s in plan] == [128] * 21 + [112]
    assert min(len({c.category for c in s.clips}) for s in plan) >= 20  # file order would give 1-2 per shard
    assert make_plan(grouped, 128, 0) == plan and make_plan(grouped, 128, 1) != plan
    assert sorted(c.key for s in plan for c in s.clips) == sorted(c.key for c in grouped["train"])
    assert [s.name for s in task_shards(plan, 1, 3)] == [f"train-{i:06d}" for i in (1, 4, 7, 10, 13, 16, 19)]


@pytest.mark.parametrize("bad, match", [
    ("Bell&abc&good&0\n", "expected 5 '&'-separated fields"),
    ("Bell&abc&good&x&3\n", "whole seconds"),
    ("Bell&abc&good&6&5\n", "StartTime <= EndTime"),
    ("Bell&abc&good&0&11\n", "StartTime <= EndTime"),
    ("Bell&a.b&good&0&3\n", "no dots"),
    ("&abc&good&0&3\n", "empty category"),
    ("background&abc&good&0&3\n", "reserved"),
    (HEADER, "header line in the middle"),
])
def test_malformed_line_names_file_and_line(tmp_path: Path, bad: str, match: str) -> None:
    _write(tmp_path, "Bell&ok1&good&0&3\n", "Bell&ok1&good&0&3\n" + bad)
    with pytest.raises(AnnotationError, match=match) as e:
        read_ave(tmp_path)
    assert f"{tmp_path / 'trainSet.txt'}:3" in str(e.value)


def test_missing_files(tmp_path: Path) -> None:
    _write(tmp_path, "Bell&ok1&good&0&3\n", "Bell&ok1&good&0&3\n", "Bell&ok1&good&0&3\n")
    shutil.rmtree(tmp_path / "AVE")
    (tmp_path / "testSet.txt").unlink()
    with pytest.raises(FileNotFoundError, match="testSet.txt is missing"):
        read_ave(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        read_ave(tmp_path / "nope")
