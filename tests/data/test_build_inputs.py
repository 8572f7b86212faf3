"""What a build accepts as input and as --out, without decoding: the --out rules, --rebuild's reach, the one
video rule, the one id rule, quoted values, file and folder modes, a cut shard's fault line (issue 22)."""

import json
import os
import stat
from pathlib import Path

import pytest

from avpea_dist.data.ids import excerpt, id_problem, in_several_splits
from avpea_dist.data.parts import check_out, clear_build
from avpea_dist.data.videos import find_video, stamp, video_paths
from avpea_dist.datasets.ave.release import AnnotationError, parse_line
from avpea_dist.datasets.musicavqa.release import Skip, parse_record
from avpea_dist.datasets.valor.release import gather
from avpea_dist.fileio import atomic_write_text, temp_dir
from tests.data.test_build import avpea


def _ave_root(root: Path, videos: bool = True) -> Path:
    root.mkdir(parents=True)
    for name in ("Annotations.txt", "trainSet.txt", "valSet.txt", "testSet.txt"):
        (root / name).write_text("Bell&abc&good&0&3\n")
    if videos:
        (root / "AVE").mkdir()
    return root


def test_out_holding_other_files_is_refused_and_left_alone(tmp_path: Path) -> None:
    root = _ave_root(tmp_path / "ave")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "train-000000.tar").write_bytes(b"my own tar")
    r = avpea("shards", "build", "ave", "--root", str(root), "--out", str(out), "--workers", "1")
    assert r.returncode == 2 and "not a shard build (notes.txt, train-000000.tar)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert (out / "train-000000.tar").read_bytes() == b"my own tar" and sorted(os.listdir(out)) == [
        "notes.txt", "train-000000.tar"]
    # --rebuild clears only a build's own files: a foreign folder is refused the same way.
    r = avpea("shards", "build", "ave", "--root", str(root), "--out", str(out), "--rebuild")
    assert r.returncode == 2 and (out / "notes.txt").is_file()
    # --out naming a file (or a path under one): one line, not a traceback.
    r = avpea("shards", "build", "ave", "--root", str(root), "--out", str(out / "notes.txt"))
    assert r.returncode == 2 and "is a file, not a folder" in r.stderr and "Traceback" not in r.stderr
    r = avpea("shards", "build", "ave", "--root", str(root), "--out", str(out / "notes.txt" / "sub"))
    assert r.returncode == 2 and "--out" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # Empty, new, and a job's own submitit/ folder are fine.
    (tmp_path / "empty").mkdir()
    (tmp_path / "job" / "submitit").mkdir(parents=True)
    for ok in ("empty", "new", "job"):
        check_out(tmp_path / ok)


def test_rebuild_removes_only_the_earlier_build(tmp_path: Path) -> None:
    out = tmp_path / "shards"
    (out / "parts").mkdir(parents=True)
    done = {"train-000000": {"file": "train-000000.tar"}, "val-000000": {"file": None}}
    (out / "parts" / "task-0000-of-0001.json").write_text(json.dumps({"build": {"fingerprint": "x", "done": done}}))
    (out / "train-000000.tar").write_bytes(b"shard")
    (out / "notes.txt").write_text("kept")
    (out / ".decoded").mkdir()
    assert sorted(clear_build(out)) == [".decoded", "parts", "train-000000.tar"]
    assert sorted(os.listdir(out)) == ["notes.txt", "parts"] and not os.listdir(out / "parts")
    check_out(out)  # still recognised as a build folder


def test_ave_without_its_video_folder_says_so_once(tmp_path: Path) -> None:
    root = _ave_root(tmp_path / "ave", videos=False)
    r = avpea("shards", "build", "ave", "--root", str(root), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "AVE is not a folder" in r.stderr and "missing file" not in r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_one_video_rule(tmp_path: Path) -> None:
    (tmp_path / "a.webm").write_bytes(b"x")
    (tmp_path / "a.MKV").write_bytes(b"x")  # earlier in VIDEO_SUFFIXES than .webm, any case
    (tmp_path / "b.mp4").mkdir()  # a folder named like a video loses to a file ...
    (tmp_path / "b.mov").write_bytes(b"x")
    (tmp_path / "c.mp4").mkdir()  # ... and is found when nothing else is (then reported as 'not a file')
    (tmp_path / "d.txt").write_bytes(b"x")
    got = {k: Path(v).name for k, v in video_paths(tmp_path, ["a", "b", "c", "d"]).items()}
    assert got == {"a": "a.MKV", "b": "b.mov", "c": "c.mp4", "d": "d.mp4"}
    assert find_video(tmp_path, "a") == tmp_path / "a.MKV"
    assert stamp(tmp_path / "d.mp4") is None and stamp(tmp_path / "c.mp4") == ["c.mp4", "not a file"]
    st = (tmp_path / "a.webm").stat()
    assert stamp(tmp_path / "a.webm") == ["a.webm", 1, st.st_mtime_ns]


@pytest.mark.parametrize("vid", ["ab c", "ab\tc", "abc\n", " abc", "abc\u3000d"])
def test_whitespace_anywhere_in_an_id_is_refused_by_every_reader(vid: str) -> None:
    assert "whitespace" in id_problem(vid)
    # VALOR: skipped with the reason; MUSIC-AVQA: skipped; AVE: an error naming the line (its policy).
    valor = gather("train", [(vid, "A caption.", None), ("ok_1.000_2.000", "A caption.", None)])
    assert list(valor.videos) == ["ok_1.000_2.000"] and "whitespace" in valor.skipped[0]["reason"]
    rec = {"video_id": vid, "question_id": 1, "type": "[\"Audio\", \"Counting\"]", "question_content": "How many?",
           "templ_values": "[]", "question_deleted": 0, "anser": "two"}
    skip = parse_record(rec, 0)
    assert isinstance(skip, Skip) and "whitespace" in skip.reason
    if vid.strip() == vid:  # AVE strips the padding around its '&' fields, never inside one
        with pytest.raises(AnnotationError, match="whitespace"):
            parse_line(f"Bell&{vid}&good&0&3", "trainSet.txt:2")


def test_a_huge_value_is_quoted_short() -> None:
    huge = "Is the <Object> " + "very " * 20000 + "loud"  # 100 kB, no question mark
    rec = {"video_id": "00000001", "question_id": 1, "type": "[\"Audio\", \"Counting\"]", "question_content": huge,
           "templ_values": "[\"piano\"]", "question_deleted": 0, "anser": "yes"}
    skip = parse_record(rec, 0)
    assert isinstance(skip, Skip) and len(skip.reason) < 300 and f"({len(repr(huge))} characters)" in skip.reason
    with pytest.raises(AnnotationError) as e:
        parse_line("Bell&abc&good&0&" + "9" * 100000, "trainSet.txt:2")
    assert len(str(e.value)) < 400
    assert excerpt("short") == "'short'"


def test_records_in_several_splits() -> None:
    a, b = {"id": "x", "question_id": 1}, {"id": "y", "question_id": 2}
    assert in_several_splits({"train": [a, b], "val": [dict(b)], "test": [dict(a), dict(b)]}) == [
        {**a, "splits": ["train", "test"]}, {**b, "splits": ["train", "val", "test"]}]
    assert in_several_splits({"train": [a, a], "test": [b]}) == []


def test_written_files_and_folders_follow_the_umask(tmp_path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    atomic_write_text(tmp_path / "f.json", "{}")
    folder = temp_dir(".t.", tmp_path)
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask
