"""VGGSound and AudioSet builds end to end on tiny generated media: missing videos counted, patterns and
other extensions found, --full-videos cutting the right seconds, a two-task build equal to the one-task one,
and the embedded AudioSet-layout set deterministic."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avpea_dist.datasets.audioset.build import BUILDER as AUDIOSET
from avpea_dist.datasets.audioset.synth import SYNTH
from avpea_dist.datasets.vggsound.build import BUILDER as VGGSOUND
from tests.data.media import brightness_at, shard_samples, timed_mp4

OPTS = dict(workers=1, shard_size=2, frame_size=32)


def _frames(out: Path, m: dict, key: str) -> list[float]:
    """The median grey level of each frame of the sample ``key``."""
    for s in m["splits"].values():
        for sh in s["shards"]:
            with tarfile.open(out / sh["file"]) as tar:
                names = tar.getnames()
                if f"{key}.f0.jpg" in names:
                    return [float(np.median(np.asarray(Image.open(io.BytesIO(
                        tar.extractfile(f"{key}.f{i}.jpg").read())).convert("L")))) for i in range(10)]
    raise KeyError(key)


@pytest.mark.slow
def test_vggsound_build(tmp_path: Path) -> None:
    rows = ['---g-f_I2yQ,1,people marching,test', '--0PQM4-hqg,30,waterfall burbling,train',
            '--9O4XZOge4,30,"female speech, woman speaking",train', '--DTR0_mIGI,11,people battle cry,train',
            '-0lrq0dgfnQ,15,"female speech, woman speaking",train', '--U7joUcTCo,0,people coughing,test',
            '#NAME?,30,playing piano,train']
    (tmp_path / "vggsound.csv").write_text("\n".join(rows) + "\n")
    videos = tmp_path / "clips"
    videos.mkdir()
    for row in rows[:4]:
        vid, start = row.split(",")[:2]
        timed_mp4(videos / f"{vid}_{int(start):06d}.mp4", 3.0, size=32)
    timed_mp4(videos / "--U7joUcTCo_000000.mkv", 3.0, size=32)  # a downloader's other container
    m = VGGSOUND.build(tmp_path / "out", VGGSOUND.options(**OPTS), progress=False, csv=tmp_path / "vggsound.csv",
                       videos=videos, val_fraction=0.25)
    assert m["schema"] == "clips" and m["dataset"] == "vggsound" and m["multilabel"] is False
    assert m["classes"] == sorted({"people marching", "waterfall burbling", "female speech, woman speaking",
                                   "people battle cry", "people coughing"})
    splits = m["splits"]
    assert sum(s["rows"] for s in splits.values()) == 7 and splits["test"]["samples"] == 2
    assert sum(s["missing_videos"] for s in splits.values()) == 1  # -0lrq0dgfnQ has no file
    assert all(s["samples"] + len(s["skipped"]) == s["rows"] == s["records"] for s in splits.values())
    assert m["availability"] == {"rows": 7, "written": 5, "missing_videos": 1, "undecodable": 0, "skipped_rows": 1,
                                 "available_fraction": round(5 / 7, 6)}
    assert m["validation"]["videos"] == 1 and splits["val"]["rows"] == 1
    samples = shard_samples(tmp_path / "out", m)
    labels = {s["id"]: s["labels"] for split in samples.values() for s in split}
    assert labels["--9O4XZOge4"] == ["female speech, woman speaking"]
    meta = next(s for s in samples["test"] if s["id"] == "---g-f_I2yQ")
    assert (meta["start"], meta["end"]) == (1.0, 11.0)
    total = {c: sum(s["label_counts"][c] for s in splits.values()) for c in m["classes"]}
    assert total["female speech, woman speaking"] == 1 and sum(total.values()) == 5


@pytest.mark.slow
def test_audioset_full_videos_cut_at_start(tmp_path: Path) -> None:
    labels = tmp_path / "class_labels_indices.csv"
    labels.write_text('index,mid,display_name\n0,/m/09x0r,Speech\n1,/m/05zppz,"Male speech, man speaking"\n')
    segs = tmp_path / "balanced_train_segments.csv"
    segs.write_text('# YTID, start_seconds, end_seconds, positive_labels\n'
                    '-0DLPzsiXXE, 10.000, 20.000, "/m/09x0r,/m/05zppz"\n'
                    '-0DLPzsiXXE, 20.000, 30.000, "/m/09x0r"\n'
                    'CQKSstz9_hs, 5.000, 15.000, "/m/09x0r"\n')
    videos = tmp_path / "videos"
    videos.mkdir()
    timed_mp4(videos / "-0DLPzsiXXE.mp4", 30.0, size=32)
    src = dict(segments=[segs], labels=labels, videos=videos, video_pattern="{id}.mp4", val_fraction=0.0)
    with pytest.raises(ValueError, match="--full-videos .* needs --sampling even"):
        AUDIOSET.build(tmp_path / "x", AUDIOSET.options(**OPTS, sampling="first"), full_videos=True, **src)
    m = AUDIOSET.build(tmp_path / "out", AUDIOSET.options(**OPTS), progress=False, full_videos=True, **src)
    s = m["splits"]["train"]
    assert s["samples"] == 2 and s["missing_videos"] == 1 and m["annotations"]["full_videos"] is True
    for key, start in (("train-000000--0DLPzsiXXE", 10.0), ("train-000001--0DLPzsiXXE", 20.0)):
        expected = brightness_at(start + (np.arange(10) + 0.5), 30.0)
        assert np.abs(np.asarray(_frames(tmp_path / "out", m, key)) - expected).max() <= 12
    # the same file read as a cut segment: two segments cannot share one file
    m = AUDIOSET.build(tmp_path / "seg", AUDIOSET.options(**OPTS), progress=False, **src)
    assert m["splits"]["train"]["samples"] == 1
    assert any("one file cannot hold two segments" in r["reason"] for r in m["splits"]["train"]["skipped"])


@pytest.mark.slow
def test_synth_two_tasks_equal_one_task(tmp_path: Path) -> None:
    opts = dict(clips=12, seconds=3.0, seed=5, size=32)
    a, b = SYNTH.make(tmp_path / "a", **opts), SYNTH.make(tmp_path / "b", **opts)
    assert a == b
    for f in sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    build = AUDIOSET.options(**OPTS)
    one = AUDIOSET.build(tmp_path / "one", build, progress=False, **SYNTH.source(tmp_path / "a"))
    src = SYNTH.source(tmp_path / "a")
    assert AUDIOSET.build(tmp_path / "two", build, task=0, tasks=2, progress=False, **src) is None
    two = AUDIOSET.build(tmp_path / "two", build, task=1, tasks=2, progress=False, **src)
    assert two is not None and (tmp_path / "one/manifest.json").read_bytes() == (tmp_path / "two/manifest.json").read_bytes()
    files = [sh["file"] for s in one["splits"].values() for sh in s["shards"]]
    assert files and all((tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes() for f in files)
    index = ["index.json", *(f"index/{split}.npz" for split in one["splits"])]
    assert all((tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes() for f in index)
    # The index's labels (CSR) are each sample's label ids as class indices, in manifest order.
    from avpea_dist.data.index import load_index

    for split, metas in shard_samples(tmp_path / "one", one).items():
        labels = load_index(tmp_path / "one", split).labels
        assert [labels.of(i).tolist() for i in range(len(metas))] == [
            [one["classes"].index(c) for c in meta["labels"]] for meta in metas]
    skipped = [r["reason"] for s in one["splits"].values() for r in s["skipped"]]
    assert any("repeated segment" in r for r in skipped) and any("/m/0notaclass" in r for r in skipped)
    assert one["availability"]["missing_videos"] == 1 and one["multilabel"] is True
    samples = shard_samples(tmp_path / "one", one)
    assert any(s["id"].startswith("-") for v in samples.values() for s in v)
    assert all(set(s["labels"]) <= set(one["classes"]) and s["labels"] for v in samples.values() for s in v)
    assert json.loads((tmp_path / "a" / "synth.json").read_text())["dataset"] == "audioset"
