"""`avpea shards build ave` end to end on real mp4 files, broken ones included, through the CLI."""

import contextlib
import io
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from avpea_dist.cli import main
from avpea_dist.datasets.ave.synth import SynthSpec, make_dataset, write_mp4
from avpea_dist.fileio import sha256_file


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def avpea(*args: str) -> Result:
    """The real CLI entry point, in this process (its forkserver then serves every build of the test)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    return Result(rc, out.getvalue(), err.getvalue())


def avpea_process(*args: str) -> subprocess.CompletedProcess:
    """The installed console script in a fresh process, running this tree's package (not the installed one's)."""
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(["avpea", *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def messy_ave(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """12 synthetic clips, then the mess of a real download: missing, empty, truncated, undecodable,
    video-only, and one re-encoded with another codec, frame rate, size, sample rate and channel count."""
    root = tmp_path_factory.mktemp("messy") / "ave"
    make_dataset(root, 12, seed=3)
    ids = [line.split("&")[1] for line in (root / "trainSet.txt").read_text().splitlines()[1:]]
    mp4 = {i: root / "AVE" / f"{i}.mp4" for i in ids}
    broken = {ids[0]: "missing file", ids[1]: "empty file", ids[2]: "undecodable", ids[3]: "undecodable",
              ids[4]: "no audio stream"}
    mp4[ids[0]].unlink()
    mp4[ids[1]].write_bytes(b"")
    data = mp4[ids[2]].read_bytes()
    mp4[ids[2]].write_bytes(data[: len(data) // 2])
    mp4[ids[3]].write_bytes(b"<html>403 Forbidden</html>" * 100)
    frames = np.zeros((40, 64, 64, 3), np.uint8)
    write_mp4(mp4[ids[4]], frames, np.zeros(0, np.float32), SynthSpec())
    write_mp4(mp4[ids[5]], np.zeros((250, 90, 160, 3), np.uint8), np.zeros(441000, np.float32),
              SynthSpec(fps=25, sample_rate=44100, channels=2, video_codec="mpeg4"))
    return root, broken


@pytest.mark.slow
def test_build_skips_bad_clips_keeps_good_and_resumes(messy_ave, tmp_path: Path) -> None:
    root, broken = messy_ave
    out = tmp_path / "shards"
    r = avpea_process("shards", "build", "ave", "--root", str(root), "--out", str(out), "--workers", "2",
                      "--shard-size", "3")
    assert r.returncode == 0, r.stderr
    assert "skipped 5 records" in r.stdout
    m = json.loads((out / "manifest.json").read_text())
    skipped = {e["id"]: e["reason"] for s in m["splits"].values() for e in s["skipped"]}
    assert set(skipped) == set(broken)
    for vid, reason in broken.items():
        assert skipped[vid].startswith(reason) and vid in r.stdout
    assert m["complete"] and m["classes"][-1] == "background" and len(m["classes"]) == 9
    assert sum(s["samples"] for s in m["splits"].values()) == 12 - len(broken)
    annotations = {line.split("&")[1]: line.split("&") for line in (root / "Annotations.txt").read_text().splitlines()[1:]}
    for split, s in m["splits"].items():
        for sh in s["shards"]:
            path = out / sh["file"]
            assert sha256_file(path) == sh["sha256"] and path.stat().st_size == sh["bytes"]
            with tarfile.open(path) as tar:
                names = tar.getnames()
                metas = [json.loads(tar.extractfile(n).read()) for n in names if n.endswith(".json")]
            assert len(metas) == sh["samples"] and len(names) == 12 * sh["samples"]
            for meta in metas:
                cat, vid, _, start, end = annotations[meta["id"]]
                assert meta["split"] == split and meta["category"] == cat
                assert meta["labels"] == [m["classes"].index(cat) if int(start) <= i < int(end) else 8 for i in range(10)]
                assert f"{meta['key']}.fbank.npy" in names and f"{meta['key']}.f9.jpg" in names
    # A rerun does no work; a lost shard (and an interrupted build: complete=false) is rebuilt alone.
    r = avpea("shards", "build", "ave", "--root", str(root), "--out", str(out), "--workers", "2", "--shard-size", "3")
    assert r.returncode == 0 and "decoded 0 videos" in r.stdout
    first = m["splits"]["train"]["shards"][0]
    (out / first["file"]).unlink()
    m["complete"] = False
    (out / "manifest.json").write_text(json.dumps(m))
    r = avpea("shards", "build", "ave", "--root", str(root), "--out", str(out), "--workers", "1", "--shard-size", "3")
    assert r.returncode == 0, r.stderr
    assert "decoded 3 videos" in r.stdout
    again = json.loads((out / "manifest.json").read_text())
    assert again["splits"]["train"]["shards"][0]["sha256"] == first["sha256"]  # same bytes: deterministic
    # Different options into the same folder are refused rather than mixed.
    r = avpea("shards", "build", "ave", "--root", str(root), "--out", str(out), "--shard-size", "4")
    assert r.returncode == 2 and "choose a new --out" in r.stderr
    # --strict turns skips into a failure; --no-audio silence keeps the video-only clip.
    r = avpea("shards", "build", "ave", "--root", str(root), "--out", str(out), "--shard-size", "3", "--strict")
    assert r.returncode == 1
    r = avpea("shards", "build", "ave", "--root", str(root), "--out", str(tmp_path / "s2"), "--workers", "2",
              "--no-audio", "silence", "--shard-size", "3")
    m2 = json.loads((tmp_path / "s2" / "manifest.json").read_text())
    assert r.returncode == 0 and sum(s["samples"] for s in m2["splits"].values()) == 12 - len(broken) + 1


@pytest.mark.slow
def test_bad_annotations_and_empty_result(messy_ave, tmp_path: Path) -> None:
    root, broken = messy_ave
    bad = tmp_path / "bad"
    (bad / "AVE").mkdir(parents=True)
    for name in ("Annotations.txt", "trainSet.txt", "valSet.txt", "testSet.txt"):
        (bad / name).write_text((root / name).read_text())
    with open(bad / "valSet.txt", "a") as f:
        f.write("Some event&id_ok&good&3\n")
    r = avpea("shards", "build", "ave", "--root", str(bad), "--out", str(tmp_path / "o"))
    n = len((bad / "valSet.txt").read_text().splitlines())
    assert r.returncode == 2 and f"valSet.txt:{n}" in r.stderr and "Traceback" not in r.stderr
    # Valid annotations but no video at all: nothing written is a failure, with every reason listed.
    (bad / "valSet.txt").write_text((root / "valSet.txt").read_text())
    r = avpea("shards", "build", "ave", "--root", str(bad), "--out", str(tmp_path / "o"), "--workers", "1")
    assert r.returncode == 1 and "no clip could be written" in r.stderr and r.stdout.count("missing file") == 12
    assert not list((tmp_path / "o").glob("*.tar"))


def test_synth_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    make_dataset(a, 4, seed=7)
    make_dataset(b, 4, seed=7)
    assert (a / "Annotations.txt").read_text() == (b / "Annotations.txt").read_text()
    for f in (a / "AVE").iterdir():
        assert f.read_bytes() == (b / "AVE" / f.name).read_bytes()
    make_dataset(tmp_path / "c", 4, seed=8)
    assert (tmp_path / "c" / "Annotations.txt").read_text() != (a / "Annotations.txt").read_text()


def test_real_annotations_one_sample_per_record(tmp_path: Path) -> None:
    """The real excerpt (tests/data/fixtures/ave_real), header-less copies of two files, mp4s for 8 of its
    15 videos: one sample per record with its own key and labels, a video decoded once for all its records,
    every other record skipped with its reason, the zero-duration record kept as all-background."""
    from tests.data.test_ave import real_copy

    root = real_copy(tmp_path / "ave", strip_header=("Annotations.txt", "testSet.txt"))
    have = ["0f_iTO5t3hU", "3tsi7DKGrWQ", "0i24WckNCeE", "0qvQIuQoODo", "VWi2ENBuTbw", "c---zaDCTaE",
            "SiA-LmxRebg", "Hhqvvc4qu2Y"]
    rng = np.random.default_rng(0)
    for k, vid in enumerate(have):
        tone = np.sin(2 * np.pi * (300 + 100 * k) * np.arange(160000) / 16000).astype(np.float32)
        write_mp4(root / "AVE" / f"{vid}.mp4", rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8), 0.3 * tone,
                  SynthSpec(size=32, fps=2))
    out = tmp_path / "shards"
    r = avpea("shards", "build", "ave", "--root", str(root), "--out", str(out), "--workers", "2",
              "--shard-size", "3", "--order-seed", "5")
    assert r.returncode == 0, r.stderr
    assert "decoded 15 videos for 21 samples" in r.stdout and "note: train VWi2ENBuTbw" in r.stdout
    m = json.loads((out / "manifest.json").read_text())
    assert m["preprocessing"]["audio_windows"] == "exact"
    lines = {s: (root / f"{s}Set.txt").read_text().removeprefix("Category&VideoID&Quality&StartTime&EndTime\n")
             .splitlines() for s in ("train", "val", "test")}
    samples = {}
    for split, s in m["splits"].items():
        assert s["records"] == len(lines[split]) == s["samples"] + len(s["skipped"]) and s["order_seed"] == 5
        assert {e["reason"] for e in s["skipped"]} == {"missing file"}
        assert all(e["id"] not in have for e in s["skipped"])
        for sh in s["shards"]:
            with tarfile.open(out / sh["file"]) as tar:
                for n in tar.getnames():
                    key, member = n.split(".", 1)
                    samples.setdefault(key, {})[member] = tar.extractfile(n).read()
        written = [json.loads(v["json"]) for v in samples.values() if json.loads(v["json"])["split"] == split]
        assert sorted(e["key"] for e in written) == sorted(
            f"{split}-{i:05d}-{vid}" for i, vid in enumerate(x.split("&")[1] for x in lines[split]) if vid in have)
        for e in written:  # its own record's labels
            cat, vid, _, start, end = lines[split][int(e["key"].split("-")[1])].split("&")
            assert (e["id"], e["category"]) == (vid, cat)
            assert e["labels"] == [m["classes"].index(cat) if int(start) <= i < int(end) else 6 for i in range(10)]
    assert len(samples) == 13
    triple = [v for v in samples.values() if json.loads(v["json"])["id"] == "0f_iTO5t3hU"]
    assert len(triple) == 3 and all(v["fbank.npy"] == triple[0]["fbank.npy"] and v["f3.jpg"] == triple[0]["f3.jpg"]
                                    for v in triple)
    zero = next(json.loads(v["json"]) for v in samples.values() if json.loads(v["json"])["id"] == "VWi2ENBuTbw")
    assert zero["labels"] == [6] * 10
    assert m["splits"]["train"]["notes"] == [{"id": "VWi2ENBuTbw", "key": zero["key"],
                                              "note": m["splits"]["train"]["notes"][0]["note"]}]
    # Shuffled before cutting: train's file order is class-grouped, its shards are not.
    first = [json.loads(v["json"])["key"] for k, v in samples.items() if k.startswith("train-")]
    assert first != sorted(first)
    r = avpea("shards", "verify", str(out), "--decode")
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout
