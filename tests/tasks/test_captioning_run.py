"""Captioning end to end through the real processes: synthetic VALOR-layout videos -> caption shards with
their text folder -> 2 torchrun ranks (gloo, DeepSpeed) training a few steps -> validation and test captioned
with beam search, every clip exactly once across ranks -> `avpea caption` on a video with the run."""

import json
import shutil
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


@pytest.fixture(scope="module")
def valor_shards(tmp_path_factory):
    from avpea_dist.data.build import BuildOptions
    from avpea_dist.datasets.ave.synth import SynthSpec
    from avpea_dist.datasets.valor.build import build_valor
    from avpea_dist.datasets.valor.synth import make_valor

    base = tmp_path_factory.mktemp("valor")
    make_valor(base / "raw", clips=16, seed=0, spec=SynthSpec(size=32))
    build_valor(base / "raw", base / "raw" / "videos", base / "shards",
                BuildOptions(workers=2, shard_size=3, frame_size=32, sampling="even"), progress=False)
    return base


def test_two_ranks_caption_every_test_clip_once_and_the_cli_captions_a_video(valor_shards, tmp_path):
    from avpea_dist.data.manifest import read_manifest
    from avpea_dist.apps.demo import default_config, train_variant

    shards = valor_shards / "shards"
    manifest = read_manifest(shards)
    run = tmp_path / "run"
    # eval.batch_size 3 over an odd split: the ranks get different numbers of clips and batches.
    overrides = ["train.steps=4", "train.eval_every=4", "train.ckpt_every=4", "train.log_every=2",
                 "data.batch_size=2", "model.img_size=32", "eval.batch_size=3", "captioning.beam=2",
                 "captioning.width=32", "captioning.layers=1", "train.progress=false"]
    result = train_variant(default_config("captioning_tiny"), run, shards, 0, 2, overrides)
    assert result["status"] == "finished" and result["task"] == "captioning"
    assert result["selection_metric"] == "cider"
    test = result["test_metrics"]
    assert test["samples"] == manifest["splits"]["test"]["samples"] and test["skipped"] == 0
    for key in ("bleu4", "rouge_l", "cider"):
        assert 0 <= test[key] <= 10
    assert test["meteor"] is None or 0 <= test["meteor"] <= 1
    ids = [e["id"] for e in test["examples"]]
    assert len(ids) == len(set(ids)) and all(e["references"] for e in test["examples"])
    # Every test clip's caption, once, in the run folder (not in result.json)
    outputs = json.loads((run / "outputs_test.json").read_text())
    assert len(outputs) == len({e["id"] for e in outputs}) == test["samples"] and "outputs" not in test
    assert all(isinstance(e["caption"], str) and e["references"] for e in outputs)
    assert outputs[: len(test["examples"])] == test["examples"]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [x for x in lines if x.get("split") == "val"]
    assert vals and vals[-1]["samples"] == manifest["splits"]["val"]["samples"] and "cider" in vals[-1]

    # `avpea caption` through the real CLI entry point, in this process while the run and the shards are in place
    # (a fresh process would import torch again, ~10 s on 2 cores); the checks after moving or deleting them run
    # in fresh processes, so nothing cached here can stand in for what is gone.
    import contextlib
    import io

    from avpea_dist import cli

    video = sorted((valor_shards / "raw" / "videos").glob("*.mp4"))[0]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main(["caption", "--run", str(run), str(video), str(tmp_path / "missing.mp4"), "--json",
                         "--beam", "1"])
    assert code == 1, stderr.getvalue()[-2000:]  # the missing video is an error; the real one is captioned
    got = json.loads(stdout.getvalue())
    assert [r["video"] for r in got] == [str(video), str(tmp_path / "missing.mp4")]
    assert isinstance(got[0]["caption"], str) and "error" in got[1]

    # The run folder holds copies of the shards' manifest and text folder: it still captions with the shards moved.
    assert (run / "shards_text" / "tokenizer.json").is_file()
    moved = shards.with_name("shards_moved")
    shards.rename(moved)
    try:
        again = subprocess.run([sys.executable, "-m", "avpea_dist.cli", "caption", "--run", str(run), str(video),
                                "--json", "--beam", "1"], capture_output=True, text=True, timeout=300)
    finally:
        moved.rename(shards)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)[0]["caption"] == got[0]["caption"]

    # The run's model folder (RUN/model, written when training finished) captions the same, the run folder gone.
    exported = tmp_path / "exported"
    shutil.copytree(run / "model", exported)
    shutil.rmtree(run)
    by_model = subprocess.run([sys.executable, "-m", "avpea_dist.cli", "caption", "--model", str(exported), str(video),
                               "--json", "--beam", "1"], capture_output=True, text=True, timeout=300)
    assert by_model.returncode == 0, by_model.stderr[-2000:]
    assert json.loads(by_model.stdout)[0]["caption"] == got[0]["caption"]
