"""`avpea shards build musicavqa` on the excerpt of the real release (tests/tasks/fixtures/musicavqa, see its
README) plus malformed records, a missing and a broken video, with tiny generated 60 s mp4s as the videos."""

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from avpea_dist.datasets.musicavqa.build import release_folder
from avpea_dist.datasets.musicavqa.release import ReleaseError, group_by_video, read_split
from avpea_dist.datasets.musicavqa.vocab import build_vocab
from tests.data.media import shard_samples, timed_mp4
from tests.data.test_build import avpea

FIXTURES = Path(__file__).parent / "fixtures" / "musicavqa"
SPLITS = ("train", "val", "test")
BAD = [  # (split, record changes on a copy of the split's first record, reason pattern)
    ("train", {"question_id": 900001, "type": "[\"Audio\", "}, "type .* is not a JSON list"),
    ("train", {"question_id": 900002, "templ_values": "[\"piano\""}, "templ_values .* is not a JSON list"),
    ("val", {"question_id": 900003, "question_content": "Is the <Object> louder than the <Object>?",
             "templ_values": "[\"piano\"]"}, "2 placeholders .* but 1 templ_values"),
    ("test", {"question_id": 900004, "anser": None}, "missing key"),
]
MISSING, BROKEN = "00000093", "00000098"  # 00000098 has questions in val and test
TRAIN_LOST = "vv00003080"  # a train video: its words and answer ("it", "piano") leave the vocabulary


@pytest.fixture(scope="module")
def avqa_build(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("avqa")
    data, videos = root / "data", root / "videos"
    shutil.copytree(FIXTURES, data)
    videos.mkdir()
    for split, changes, _ in BAD:
        path = data / "json" / f"avqa-{split}.json"
        records = json.loads(path.read_text())
        bad = {**records[0], **changes}
        records.append({k: v for k, v in bad.items() if v is not None})
        path.write_text(json.dumps(records))
    ids = {r["video_id"] for s in SPLITS for r in json.loads((data / "json" / f"avqa-{s}.json").read_text())}
    one = timed_mp4(root / "clip.mp4", 60.0, fps=1, size=32)  # the same bytes serve every video id
    for vid in ids - {MISSING, BROKEN, TRAIN_LOST}:
        shutil.copyfile(one, videos / f"{vid}.mp4")
    (videos / f"{BROKEN}.mp4").write_bytes(one.read_bytes()[:2000])
    out = root / "shards"
    r = avpea("shards", "build", "musicavqa", "--json-dir", str(data), "--json-set", "json", "--videos", str(videos),
              "--out", str(out), "--workers", "2", "--shard-size", "8")
    assert r.returncode == 0, r.stderr
    return {"data": data, "out": out, "stdout": r.stdout}


@pytest.mark.slow
def test_build_real_excerpt(avqa_build) -> None:
    out, data = avqa_build["out"], avqa_build["data"] / "json"
    m = json.loads((out / "manifest.json").read_text())
    assert m["schema"] == "avqa" and m["json_set"] == "json" and m["preprocessing"]["sampling"] == "even"
    release = {s: read_split(data, s) for s in SPLITS}
    kept = [q for q in release["train"].questions if q.video_id != TRAIN_LOST]
    assert m["vocab"] == build_vocab(kept).to_json() != build_vocab(release["train"].questions).to_json()
    got = shard_samples(out, m)
    keys = [meta["key"] for metas in got.values() for meta in metas]
    assert len(set(keys)) == len(keys) and all(re.fullmatch(r"(train|val|test)-\d{5}-[A-Za-z0-9_-]+", k) for k in keys)
    for split in SPLITS:
        s, sq = m["splits"][split], release[split]
        assert s["records"] == len(json.loads((data / f"avqa-{split}.json").read_text())) == sq.records
        assert s["questions"] + len(s["skipped"]) == s["records"]
        assert all(set(e) == {"id", "question_id", "reason"} and e["reason"] for e in s["skipped"])
        # One sample per video of the split, holding its questions as the release reader fills them.
        expected = {vid: [q.to_json() for q in qs] for vid, qs in group_by_video(sq.questions).items()
                    if vid not in (MISSING, BROKEN, TRAIN_LOST)}
        assert {meta["id"]: meta["questions"] for meta in got[split]} == expected
        assert all(meta["split"] == split and meta["key"].endswith(meta["id"]) for meta in got[split])
        hist: dict[str, Counter] = {}
        for meta in got[split]:
            for q in meta["questions"]:
                hist.setdefault("/".join(q["type"]), Counter())[q["answer"]] += 1
        assert s["answer_histogram"] == {k: dict(v) for k, v in hist.items()}
    # Every question of a lost video is skipped once, with the video's reason.
    for vid, reason in ((MISSING, "missing file"), (BROKEN, "undecodable"), (TRAIN_LOST, "missing file")):
        for split in SPLITS:
            qids = [q.question_id for q in group_by_video(release[split].questions).get(vid, [])]
            lost = [e for e in m["splits"][split]["skipped"] if e["id"] == vid and "video" in e["reason"]]
            assert sorted(e["question_id"] for e in lost) == sorted(qids)
            assert all(e["reason"].startswith(f"video {vid}.mp4: {reason}") for e in lost)
    for split, changes, pattern in BAD:
        entry = next(e for e in m["splits"][split]["skipped"] if e["question_id"] == changes["question_id"])
        assert re.search(pattern, entry["reason"]), entry
    # The release's repeated question ids with different answers (json/) are skipped, every copy.
    assert sum("occurs 2 times" in e["reason"] for e in m["splits"]["test"]["skipped"]) >= 6
    # A video with questions in val and test is a sample in both (here: another such video than BROKEN),
    # decoded once: every video of the release once, for more samples.
    both = {meta["id"] for meta in got["val"]} & {meta["id"] for meta in got["test"]}
    videos = {q.video_id for sq in release.values() for q in sq.questions}
    used = sum(len(group_by_video(sq.questions)) for sq in release.values())
    assert both and used > len(videos)
    assert f"decoded {len(videos)} videos for {used} samples" in avqa_build["stdout"]
    assert not (out / ".decoded").exists()


def test_release_folder_choice(tmp_path: Path) -> None:
    assert release_folder(FIXTURES, "json") == FIXTURES / "json"
    assert release_folder(FIXTURES) == FIXTURES / "json_update"  # the corrected set by default
    assert release_folder(FIXTURES / "json", "json_update") == FIXTURES / "json"  # a folder of the files itself
    with pytest.raises(ValueError, match="--json-set"):
        release_folder(FIXTURES, "json2")
    with pytest.raises(ReleaseError, match="is not a folder"):
        release_folder(tmp_path / "nothing")
    r = avpea("shards", "build", "musicavqa", "--json-dir", str(FIXTURES), "--videos", str(tmp_path),
              "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "avqa-train.json is missing" in r.stderr  # json_update/ has no train excerpt
    r = avpea("shards", "build", "musicavqa", "--json-dir", str(FIXTURES), "--videos", str(tmp_path / "no"),
              "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "--videos" in r.stderr and "is not a folder" in r.stderr
