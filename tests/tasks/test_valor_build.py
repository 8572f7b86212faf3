"""`avpea shards build valor` on an excerpt of the real VALOR-32K files (tests/tasks/fixtures/valor32k, see its
README) plus the mess a real copy brings (several captions, duplicates, empty captions, missing and broken
videos), with tiny generated mp4s standing in for the videos."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avpea_dist.data.parts import part_path, read_part
from avpea_dist.datasets.valor import release
from tests.data.media import shard_samples, timed_mp4
from tests.data.test_build import avpea

FIXTURES = Path(__file__).parent / "fixtures" / "valor32k"
SPLITS = ("train", "val", "test")


def real(split: str) -> list[dict]:
    return json.loads((FIXTURES / f"desc_{split}.json").read_text())


@pytest.fixture(scope="module")
def messy_valor(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The real excerpt with records added the way a real copy goes wrong; the expected outcome beside it."""
    root = tmp_path_factory.mktemp("valor")
    ann, videos = root / "ann", root / "videos"
    ann.mkdir()
    videos.mkdir()
    desc = {s: real(s) for s in SPLITS}
    t0, t1, v0 = desc["train"][0]["video_id"], desc["train"][1]["video_id"], desc["val"][0]["video_id"]
    desc["train"] += [
        {"video_id": t0, "desc": "A second caption of the first clip."},  # several captions: one sample
        dict(desc["train"][1]),  # exact duplicate: written once, skipped once
        {"video_id": t1, "desc": "   "},  # empty
        {"video_id": t1, "desc": 42},  # not a string
        {"video_id": t1},  # missing key
        "not a record",
        {"video_id": "../escape_0.000_10.000", "desc": "A path, not an id."},
        {"video_id": "gone-Video_1_0.000_10.000", "desc": "No video file for this one."},
        {"video_id": "broken_Video_0.000_10.000", "desc": "A broken file."},
        {"video_id": "broken_Video_0.000_10.000", "desc": "Another caption of the broken file."},
    ]
    desc["test"].append({"video_id": v0, "desc": "The first val clip, captioned in test too."})  # two splits
    for split in SPLITS:
        (ann / f"desc_{split}.json").write_text(json.dumps(desc[split]))
    ids = {r["video_id"] for s in SPLITS for r in desc[s] if isinstance(r, dict) and "video_id" in r}
    for vid in sorted(ids - {"gone-Video_1_0.000_10.000", "broken_Video_0.000_10.000", "../escape_0.000_10.000"}):
        suffix = ".mkv" if vid == t1 else ".mp4"  # a download tool's container: found as <id>.mkv
        timed_mp4(videos / f"{vid}{suffix}", 7.0 if "7.000" in vid else 10.0, fps=2, size=32)
    (videos / f"{t0}.webm").write_bytes(b"not a video")  # <id>.mp4 exists: preferred
    (videos / "gone-Video_1_0.000_10.000.txt").write_text("not a video container")
    (videos / "broken_Video_0.000_10.000.mp4").write_bytes(b"<html>404</html>" * 64)
    out = root / "shards"
    r = avpea("shards", "build", "valor", "--ann-dir", str(ann), "--videos", str(videos), "--out", str(out),
              "--workers", "2", "--shard-size", "3")
    assert r.returncode == 0, r.stderr
    return {"ann": ann, "videos": videos, "out": out, "desc": desc, "stdout": r.stdout, "t0": t0, "t1": t1, "v0": v0}


@pytest.mark.slow
def test_build_real_excerpt_with_its_mess(messy_valor) -> None:
    out, desc = messy_valor["out"], messy_valor["desc"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["schema"] == "captions" and m["complete"] and m["preprocessing"]["sampling"] == "even"
    assert "classes" not in m and m["annotations"]["layout"] == "desc"
    got = shard_samples(out, m)
    keys = [meta["key"] for metas in got.values() for meta in metas]
    assert len(set(keys)) == len(keys) and all(re.fullmatch(r"(train|val|test)-\d{5}-[A-Za-z0-9_-]+", k) for k in keys)
    for split in SPLITS:
        s = m["splits"][split]
        assert s["records"] == len(desc[split]) and s["captions"] + len(s["skipped"]) == s["records"]
        assert s["samples"] == len(got[split]) == sum(sh["samples"] for sh in s["shards"])
        assert s["captions"] == sum(len(meta["captions"]) for meta in got[split])
        assert all(set(e) == {"id", "reason"} and e["reason"] for e in s["skipped"])
        # Every real record of the excerpt is written, its id verbatim (dots, '-' and '_' kept).
        by_id = {meta["id"]: meta for meta in got[split]}
        for rec in real(split):
            assert rec["desc"] in by_id[rec["video_id"]]["captions"]
            assert by_id[rec["video_id"]]["split"] == split
    train = {meta["id"]: meta for meta in got["train"]}
    t0, t1, v0 = messy_valor["t0"], messy_valor["t1"], messy_valor["v0"]
    assert train[t0]["captions"] == [desc["train"][0]["desc"], "A second caption of the first clip."]
    assert train[t1]["captions"] == [desc["train"][1]["desc"]]  # the duplicate written once (from <id>.mkv)
    reasons = [e["reason"] for e in m["splits"]["train"]["skipped"]]
    assert len(reasons) == 9
    expected = ["exact duplicate of record 1", "is empty or not a string", "is empty or not a string",
                "missing key(s) desc", "not an object", "cannot name a file",
                "video gone-Video_1_0.000_10.000.mp4: missing file", "undecodable", "undecodable"]
    for pattern in expected:
        hit = next(r for r in reasons if pattern in r)
        reasons.remove(hit)
    assert not reasons
    assert {e["id"] for e in m["splits"]["train"]["skipped"] if "video " in e["reason"]} == {
        "gone-Video_1_0.000_10.000", "broken_Video_0.000_10.000"}
    # The same video in val and test: one sample in each, with that split's captions.
    test = {meta["id"]: meta for meta in got["test"]}
    assert test[v0]["captions"] == ["The first val clip, captioned in test too."]
    assert {meta["id"]: meta for meta in got["val"]}[v0]["captions"] == [desc["val"][0]["desc"]]
    assert m["most_frequent_caption"] == desc["train"][0]["desc"]  # all once: the first one
    assert "skipped 9 records" in messy_valor["stdout"]


@pytest.mark.slow
def test_text_folder_loads_like_a_checkpoint(messy_valor, monkeypatch) -> None:
    from transformers import AutoModel, AutoTokenizer

    from avpea_dist.datasets.valor.textmodel import load_tokenizer, resolve_text_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = messy_valor["out"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["text"]["folder"] == "text" and resolve_text_model("shards", out) == str(out / "text")
    tok = AutoTokenizer.from_pretrained(out / "text", local_files_only=True)
    model = AutoModel.from_pretrained(out / "text", local_files_only=True)
    assert len(tok) == m["text"]["vocab_size"] == model.config.vocab_size
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 128
    assert tok.model_max_length == model.config.max_position_embeddings  # truncation=True fits the model
    caption = messy_valor["desc"]["train"][0]["desc"]
    ids = tok(caption)["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and tok.unk_token_id not in ids
    assert "".join(tok.decode(ids, skip_special_tokens=True).split()) == "".join(caption.lower().split())
    assert load_tokenizer(resolve_text_model("shards", out))(caption)["input_ids"] == ids
    assert load_tokenizer(str(out / "text")).vocab == tok.vocab
    with pytest.raises(FileNotFoundError, match="local Hugging Face cache"):
        load_tokenizer("no-such-org/no-such-model")
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        resolve_text_model("./missing/folder", out)


@pytest.mark.slow
def test_rerun_resumes_and_a_killed_build_completes(messy_valor, tmp_path: Path) -> None:
    out, ann, videos = messy_valor["out"], messy_valor["ann"], messy_valor["videos"]
    args = ("shards", "build", "valor", "--ann-dir", str(ann), "--videos", str(videos), "--out", str(out),
            "--workers", "1", "--shard-size", "3", "--no-text")
    before = json.loads((out / "manifest.json").read_text())
    mtime = (out / "text" / "model.safetensors").stat().st_mtime_ns
    r = avpea(*args[:-1])  # with the text folder: the same captions, the folder kept as it is
    assert r.returncode == 0 and "decoded 0 videos" in r.stdout
    assert json.loads((out / "manifest.json").read_text()) == before
    assert (out / "text" / "model.safetensors").stat().st_mtime_ns == mtime
    # A lost shard (and a manifest lost with it) is rebuilt alone, to the same bytes.
    lost = before["splits"]["val"]["shards"][0]
    (out / "manifest.json").unlink()
    (out / lost["file"]).unlink()
    r = avpea(*args)
    assert r.returncode == 0, r.stderr
    assert f"decoded {lost['samples']} videos" in r.stdout
    after = json.loads((out / "manifest.json").read_text())
    assert after["splits"] == before["splits"] and "text" not in after
    r = avpea(*args[:-3], "--shard-size", "4")
    assert r.returncode == 2 and "choose a new --out" in r.stderr
    # A build killed (SIGKILL, with its decoding workers) after two shards resumes from the third.
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "avpea_dist.cli", *args[:8], str(killed), "--workers", "2", "--shard-size", "1",
           "--no-text"]
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    part, deadline, finished = part_path(killed, 0, 1), time.monotonic() + 120, 0
    while finished < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
        with contextlib.suppress(FileNotFoundError, ValueError):
            finished = len(read_part(part)["build"]["done"])
    assert proc.poll() is None, "the build ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert finished >= 2 and not (killed / "manifest.json").exists()
    r = avpea(*cmd[3:])
    assert r.returncode == 0, r.stderr
    assert re.search(r"reused (\d+) finished shards", r.stdout).group(1) == str(finished)
    resumed = json.loads((killed / "manifest.json").read_text())
    for split, s in resumed["splits"].items():
        b = before["splits"][split]
        assert (s["records"], s["captions"], s["samples"]) == (b["records"], b["captions"], b["samples"])
        assert sorted(e["reason"] for e in s["skipped"]) == sorted(e["reason"] for e in b["skipped"])
    assert sorted(map(str, shard_samples(killed, resumed).items())) == sorted(map(str, shard_samples(out, after).items()))


def test_valor_own_layout(tmp_path: Path) -> None:
    """txt_mapper_en.json {id: [captions]} + train_id.json / test_id.json: val is a seeded hold-out of train."""
    ann = tmp_path / "valor"
    ann.mkdir()
    mapper: dict[str, list[str]] = {}
    for split in SPLITS:
        for r in real(split):
            mapper.setdefault(r["video_id"], []).append(r["desc"])
    train_ids = [r["video_id"] for r in real("train")] + [r["video_id"] for r in real("val")]
    (ann / "txt_mapper_en.json").write_text(json.dumps({**mapper, "lone": "one caption as a plain string"}))
    (ann / "train_id.json").write_text(json.dumps(train_ids + ["lone", "not-in-mapper"]))
    (ann / "test_id.json").write_text(json.dumps([r["video_id"] for r in real("test")]))
    splits, info = release.read_release(ann, val_fraction=0.25, seed=3)
    assert info["layout"] == "txt_mapper" and info["val_from"]["seed"] == 3
    assert info["val_from"]["videos"] == round(0.25 * 18)  # of the 18 distinct train ids
    assert not set(splits["train"].videos) & set(splits["val"].videos)
    assert set(splits["train"].videos) | set(splits["val"].videos) == set(train_ids) | {"lone"}
    assert splits["test"].videos == {r["video_id"]: [r["desc"]] for r in real("test")}
    for s in splits.values():
        assert sum(map(len, s.videos.values())) + len(s.skipped) == s.records
    assert release.read_release(ann, val_fraction=0.25, seed=3)[0] == splits  # seeded: the same every time
    (ann / "val_id.json").write_text(json.dumps([r["video_id"] for r in real("val")]))
    splits, info = release.read_release(ann)
    assert info["val_from"] == {"source": "val_id.json"} and len(splits["val"].videos) == len(real("val"))
    shutil.rmtree(ann)
    with pytest.raises(release.ReleaseError, match="is not a folder"):
        release.read_release(ann)
    ann.mkdir()
    with pytest.raises(release.ReleaseError, match="holds neither desc_train.json"):
        release.read_release(ann)
    shutil.copy(FIXTURES / "desc_train.json", ann)
    with pytest.raises(release.ReleaseError, match="desc_val.json is missing"):
        release.read_release(ann)
    (ann / "desc_val.json").write_text('{"video_id": "a list was expected"}')
    with pytest.raises(release.ReleaseError, match="expected a JSON list"):
        release.read_release(ann)
