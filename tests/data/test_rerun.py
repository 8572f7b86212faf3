"""Reruns that see what the user fixed (issue 22): videos added, replaced or renamed since a build rebuild the
shards holding them, no skip reason outlives its file, and the result equals a clean build of the fixed inputs.
Also: --min-seconds refuses what is shorter, a folder named like a video is not 'missing', --rebuild."""

import json
import shutil
from pathlib import Path

import pytest

from avpea_dist.data.decode import DecodeError, decode_clip
from avpea_dist.datasets.ave.synth import SynthSpec, make_dataset
from tests.data.media import shard_samples, timed_mp4
from tests.data.test_build import avpea

ARGS = ["--workers", "1", "--shard-size", "2"]


def _train_ids(root: Path) -> list[str]:
    return [line.split("&")[1] for line in (root / "trainSet.txt").read_text().splitlines()[1:]]


@pytest.mark.slow
def test_rerun_rebuilds_what_the_user_fixed(tmp_path: Path) -> None:
    root, out = tmp_path / "ave", tmp_path / "shards"
    make_dataset(root, 6, seed=2, spec=SynthSpec(size=32, fps=2))
    lost, broken, *_ = _train_ids(root)
    good = {vid: (root / "AVE" / f"{vid}.mp4").read_bytes() for vid in (lost, broken)}
    (root / "AVE" / f"{lost}.mp4").unlink()
    (root / "AVE" / f"{broken}.mp4").write_bytes(b"<html>403</html>" * 64)
    r = avpea("shards", "build", "ave", "--root", str(root), "--out", str(out), *ARGS)
    assert r.returncode == 0, r.stderr
    before = json.loads((out / "manifest.json").read_text())
    assert {e["id"] for e in before["splits"]["train"]["skipped"]} == {lost, broken}
    # The user fixes both: the lost one comes back as another container, the broken one is downloaded again.
    (root / "AVE" / f"{lost}.mkv").write_bytes(good[lost])
    (root / "AVE" / f"{broken}.mp4").write_bytes(good[broken])
    r = avpea("shards", "build", "ave", "--root", str(root), "--out", str(out), *ARGS)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["splits"]["train"]["skipped"] == [] and "skipped" not in r.stdout
    assert {meta["id"] for meta in shard_samples(out, m)["train"]} >= {lost, broken}
    changed = [sh for sh, old in zip(m["build"]["done"].values(), before["build"]["done"].values()) if sh != old]
    assert f"rebuilt {len(changed)} whose videos changed" in r.stdout and f"{lost}.mkv added" in r.stdout
    assert "replaced" in r.stdout and len(changed) < len(m["build"]["done"])  # the rest reused
    # Nothing changed since: nothing rebuilt. The result equals a clean build of the fixed release.
    r = avpea("shards", "build", "ave", "--root", str(root), "--out", str(out), *ARGS)
    assert "decoded 0 videos" in r.stdout and "rebuilt" not in r.stdout
    r = avpea("shards", "build", "ave", "--root", str(root), "--out", str(tmp_path / "clean"), *ARGS)
    assert (tmp_path / "clean" / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
    # A video removed since: its records are skipped now, not kept from the old shard.
    (root / "AVE" / f"{lost}.mkv").unlink()
    r = avpea("shards", "build", "ave", "--root", str(root), "--out", str(out), *ARGS)
    m = json.loads((out / "manifest.json").read_text())
    assert [e["id"] for e in m["splits"]["train"]["skipped"]] == [lost] and f"{lost}.mkv removed" in r.stdout
    # Other options into the same folder: refused with the way out; --rebuild replaces the build.
    (out / "notes.txt").write_text("the user's, kept")
    r = avpea("shards", "build", "ave", "--root", str(root), "--out", str(out), "--workers", "1", "--shard-size", "3")
    assert r.returncode == 2 and "--rebuild" in r.stderr
    r = avpea("shards", "build", "ave", "--root", str(root), "--out", str(out), "--workers", "1", "--shard-size", "3",
              "--rebuild")
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["shard_size"] == 3 and (out / "notes.txt").is_file()
    assert sorted(p.name for p in out.glob("*.tar")) == sorted(
        sh["file"] for s in m["splits"].values() for sh in s["shards"])


@pytest.mark.slow
def test_a_record_in_two_splits_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "ave"
    make_dataset(root, 3, seed=5, spec=SynthSpec(size=32, fps=2))
    train = (root / "trainSet.txt").read_text().splitlines()
    with open(root / "testSet.txt", "a") as f:
        f.write(train[1] + "\n")
    r = avpea("shards", "build", "ave", "--root", str(root), "--out", str(tmp_path / "out"), *ARGS)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    cat, vid, _, start, end = train[1].split("&")
    assert m["in_several_splits"] == [{"id": vid, "category": cat, "start": int(start), "end": int(end),
                                       "splits": ["train", "test"]}]
    assert "listed in more than one split" in r.stdout


@pytest.mark.parametrize("sampling", ["first", "even"])
def test_min_seconds_refuses_shorter_clips(tmp_path: Path, sampling: str) -> None:
    one = timed_mp4(tmp_path / "one.mp4", 0.1, fps=10)  # a single frame
    half = timed_mp4(tmp_path / "half.mp4", 0.5, fps=4)
    ok = timed_mp4(tmp_path / "ok.mp4", 1.0, fps=4)
    for clip in (one, half):
        with pytest.raises(DecodeError, match="too short"):
            decode_clip(clip, size=16, min_seconds=1.0, sampling=sampling)
    frames, _ = decode_clip(ok, size=16, min_seconds=1.0, sampling=sampling)
    assert frames.shape == (10, 16, 16, 3)
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(DecodeError, match="not a file"):
        decode_clip(tmp_path / "dir.mp4", min_seconds=1.0, sampling=sampling)
    with pytest.raises(DecodeError, match="missing file"):
        decode_clip(tmp_path / "gone.mp4", min_seconds=1.0, sampling=sampling)


@pytest.mark.slow
def test_every_train_video_bad_says_why_then_a_rerun_builds(tmp_path: Path) -> None:
    from tests.tasks.test_avqa_build import FIXTURES

    data, videos = tmp_path / "data", tmp_path / "videos"
    shutil.copytree(FIXTURES, data)
    videos.mkdir()
    ids = {r["video_id"] for s in ("train", "val", "test")
           for r in json.loads((data / "json" / f"avqa-{s}.json").read_text())}
    args = ["shards", "build", "musicavqa", "--json-dir", str(data), "--json-set", "json", "--videos", str(videos),
            "--out", str(tmp_path / "out"), "--workers", "1", "--shard-size", "4"]
    r = avpea(*args)
    assert r.returncode == 2 and "missing file" in r.stderr
    assert "no train question" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    clip = timed_mp4(tmp_path / "clip.mp4", 4.0, fps=2, size=32)
    for vid in ids:
        shutil.copyfile(clip, videos / f"{vid}.mp4")
    r = avpea(*args)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert all("missing file" not in e["reason"] for s in m["splits"].values() for e in s["skipped"])
