"""Finding a segment's video by ``--video-pattern``, as downloaders name them."""

from pathlib import Path

import pytest

from avpea_dist.data.video_files import VideoFolder, check_pattern, format_name, has_suffix


def test_patterns_name_segments() -> None:
    assert format_name("{id}_{start:06d}.mp4", "---g-f_I2yQ", 1.0, 11.0) == "---g-f_I2yQ_000001.mp4"
    assert format_name("{id}_{start}_{end}.mp4", "-0DLPzsiXXE", 30.0, 40.0) == "-0DLPzsiXXE_30_40.mp4"
    assert format_name("{id}_{start}_{end}.mp4", "CQKSstz9_hs", 202.7, 212.7) == "CQKSstz9_hs_202.7_212.7.mp4"
    assert format_name("Y{id}.mp4", "-0DLPzsiXXE", 30.0, 40.0) == "Y-0DLPzsiXXE.mp4"
    assert format_name("{id}_{start_ms}_{end_ms}", "x", 30.0, 40.0) == "x_30000_40000"
    with pytest.raises(ValueError, match="cannot name the segment at 202.7-212.7 s"):
        format_name("{id}_{start:06d}.mp4", "CQKSstz9_hs", 202.7, 212.7)
    assert has_suffix("Y{id}.mp4") and not has_suffix("{id}_{start}") and has_suffix("clips/{id}.webm")


def test_bad_patterns() -> None:
    with pytest.raises(ValueError, match=r"must use \{id\}.*'label'"):
        check_pattern("{id}_{label}.mp4")
    with pytest.raises(ValueError, match="must use"):
        check_pattern("{start}.mp4")
    with pytest.raises(ValueError, match="no absolute path"):
        check_pattern("/data/{id}.mp4")
    with pytest.raises(ValueError, match="not a valid pattern"):
        check_pattern("{id")


def test_any_extension_never_partial_downloads(tmp_path: Path) -> None:
    for name in ("a_30.mkv", "a_30.webm", "b_30.mp4.part", "b_30.part", "c_202.7.mp4", "d.json", "sub/e.mp4"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    folder = VideoFolder(tmp_path)
    assert folder.find("a_30.mp4") == tmp_path / "a_30.mkv"  # mkv ranks before webm
    assert folder.find("b_30.mp4") is None
    assert folder.find("c_202.7.mp4") == tmp_path / "c_202.7.mp4"
    assert folder.find("c_202.7", suffixed=False) == tmp_path / "c_202.7.mp4"
    assert folder.find("d.mp4") is None and folder.find("sub/e.mp4") == tmp_path / "sub" / "e.mp4"
    assert folder.find("nosuch/e.mp4") is None
    with pytest.raises(FileNotFoundError, match="--videos"):
        VideoFolder(tmp_path / "none")
