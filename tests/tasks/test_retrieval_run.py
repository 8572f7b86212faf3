"""Retrieval end to end on tiny real shards: `shards synth valor` -> `shards build valor` -> a 2-rank DeepSpeed
run (torchrun, gloo, CPU) -> result.json and metrics.jsonl; then `avpea search` on that run, whose second
query reuses the index without decoding a video."""

import json
import shutil
import subprocess
import sys

import pytest

from avpea_dist.runtime import startup

TINY = ["model.img_size=32", "data.batch_size=2", "train.steps=2", "train.eval_every=2", "train.ckpt_every=2",
        "optim.warmup_steps=1", "train.progress=false", "eval.batch_size=4"]


@pytest.fixture(scope="module")
def tiny_run(valor_synth, tmp_path_factory):
    base = valor_synth  # the session's synthetic VALOR set and shards (tests/conftest.py), read only
    run = tmp_path_factory.mktemp("retrieval") / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(startup.free_port()), "-m", "avpea_dist.train.entry", "configs/retrieval_tiny.yaml",
           f"data.shards={base / 'shards'}", f"train.out={run}", *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return base, run


@pytest.mark.slow
@pytest.mark.distributed
def test_two_rank_run_selects_on_val_and_tests_every_clip_once(tiny_run):
    base, run = tiny_run
    manifest = json.loads((base / "shards" / "manifest.json").read_text())
    result = json.loads((run / "result.json").read_text())
    assert result["task"] == "retrieval" and result["status"] == "finished" and result["world_size"] == 2
    assert result["selection_metric"] == "r_sum" and result["best_step"] == 2
    test = result["test_metrics"]
    assert test["samples"] == manifest["splits"]["test"]["samples"] and test["skipped"] == 0
    assert test["captions"] == manifest["splits"]["test"]["captions"]
    for k in ("t2v_r1", "t2v_r5", "t2v_r10", "v2t_r1", "v2t_r5", "v2t_r10"):
        assert 0 <= test[k] <= 1
    assert test["t2v_r10"] == 1.0  # a test split of 4 clips: every clip is within the top 10
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    val = [x for x in lines if x.get("split") == "val"]
    assert val and "r_sum" in val[0] and val[0]["samples"] == manifest["splits"]["val"]["samples"]


@pytest.mark.slow
def test_search_builds_the_index_once_then_reuses_it(tiny_run, tmp_path, monkeypatch, capsys):
    from avpea_dist import cli
    from avpea_dist.apps.search import search
    from avpea_dist.apps import runmodel

    base, run = tiny_run
    videos = tmp_path / "videos"
    videos.mkdir()
    for mp4 in sorted((base / "raw" / "videos").glob("*.mp4"))[:3]:
        shutil.copy(mp4, videos / mp4.name)
    (videos / "broken.mp4").write_bytes(b"not a video")
    decoded, real = [], runmodel.media_from_video

    def counting(path, cfg, **kw):
        decoded.append(path)
        return real(path, cfg, **kw)

    monkeypatch.setattr(runmodel, "media_from_video", counting)
    query = "a red square on the left while a low chord plays"
    first = search(run, query, videos=str(videos), top=2)
    assert not first["reused"] and first["clips"] == 3 and len(decoded) == 4
    assert [s["id"] for s in first["skipped"]] == ["broken.mp4"]
    assert len(first["results"]) == 2 and first["results"][0]["score"] >= first["results"][1]["score"]

    def no_decoding(path, cfg, **kw):
        raise AssertionError("the second query decoded a video")

    monkeypatch.setattr(runmodel, "media_from_video", no_decoding)
    argv = ["search", "--run", str(run), "--videos", str(videos), "--query", "a high whistle", "--top", "3"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "reused index" in out and out.count(".mp4") == 3
    (videos / "broken.mp4").unlink()  # the folder changed: the index is rebuilt (and decodes again)
    monkeypatch.setattr(runmodel, "media_from_video", counting)
    again = search(run, query, videos=str(videos))
    assert not again["reused"] and again["clips"] == 3 and len(decoded) == 7 and not again["skipped"]
    shards = search(run, query, shards=str(base / "shards"), split="test", top=4)
    assert shards["clips"] == 4 and all("caption" in m for m in shards["results"])
