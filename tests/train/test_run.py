"""run_training in one process on in-memory batches: the loop's decisions and the run folder."""

from __future__ import annotations

import json

import pytest

from avpea_dist.config import ConfigError
from avpea_dist.runtime import preempt
from avpea_dist.train.loop import TrainingError
from avpea_dist.train.metrics import read_jsonl
from avpea_dist.train.run import run_training

from trainkit import MemoryData, model_and_task, tiny_config


def _cfg(out, *extra):
    return tiny_config(f"train.out={out}", "train.steps=6", "train.eval_every=2", "train.ckpt_every=2",
                       "train.log_every=1", "train.deterministic=true", "optim.warmup_steps=2", *extra)


def _losses(out):
    return [(r["step"], r["loss"], r["data_digest"]) for r in read_jsonl(out / "metrics.jsonl")
            if r.get("split") == "train" and "loss" in r]


def test_run_folder_preemption_and_exact_resume(tmp_path):
    straight = run_training(_cfg(tmp_path / "a"), data=MemoryData(_cfg(tmp_path / "a"), 0))
    assert straight["status"] == "finished" and straight["step"] == 6
    assert straight["test_accuracy"] is not None and straight["best_step"] in (2, 4, 6)
    a = tmp_path / "a"
    for name in ("config.yaml", "run.json", "metrics.jsonl", "result.json", "best/adapters.safetensors",
                 "final/adapters.safetensors", "checkpoints/latest"):
        assert (a / name).is_file(), name
    assert json.loads((a / "run.json").read_text())["git"]["commit"]
    assert "RANDOMLY INITIALISED" in json.loads((a / "run.json").read_text())["backbone_weights"]["warning"]
    assert list((a / "tb").iterdir()), "no TensorBoard events"

    evals = []

    def stop_after_first_eval(step, metrics):
        evals.append((step, metrics["accuracy"]))
        preempt.request_stop("test")
        preempt.request_stop("test again")  # a second signal must not cause a second save

    b = tmp_path / "b"
    first = run_training(_cfg(b), on_eval=stop_after_first_eval, data=MemoryData(_cfg(b), 0))
    assert first["status"] == "preempted" and first["step"] == 3  # the flag is read at the next boundary and first["test_accuracy"] is None
    assert evals == [(2, evals[0][1])]
    assert (b / "checkpoints" / "latest").read_text().strip() == "step_00000003"
    second = run_training(_cfg(b), data=MemoryData(_cfg(b), 0))
    assert second["status"] == "finished"
    assert _losses(a) == _losses(b), "a preempted and resumed run must match an uninterrupted one bit for bit"
    assert second["test_accuracy"] == straight["test_accuracy"]


def test_consecutive_non_finite_steps_stop_the_run(tmp_path):
    cfg = _cfg(tmp_path / "r", "train.max_skipped_steps=3")
    with pytest.raises(TrainingError, match="3 consecutive steps had a non-finite loss"):
        run_training(cfg, data=MemoryData(cfg, 0, nan_at=set(range(1, 100))))
    records = read_jsonl(tmp_path / "r" / "metrics.jsonl")
    assert [r["step"] for r in records if r.get("skipped")] == [1, 1, 1]  # the step counter never moved


def test_a_single_non_finite_step_is_skipped_and_training_goes_on(tmp_path):
    cfg = _cfg(tmp_path / "r")
    result = run_training(cfg, data=MemoryData(cfg, 0, nan_at={2}))
    assert result["status"] == "finished" and result["step"] == 6 and result["skipped_steps"] == 1


def test_hooks_see_every_batch_step_evaluation_and_save_and_can_spoil_a_loss(tmp_path):
    import dataclasses

    from avpea_dist.train.hooks import TrainHooks

    class Recorder(TrainHooks):
        def __init__(self):
            self.seen, self.steps = [], 0

        def on_batch(self, epoch, index, batch):
            self.seen.append(("batch", epoch, index))

        def before_step(self, engine):
            self.steps += 1

        def after_step(self, engine, r):
            self.seen.append(("step", self.steps, r.applied))

        def on_loss(self, outputs, batch, loss):  # the 3rd step call's loss becomes NaN: skipped on every rank
            return dataclasses.replace(loss, loss=loss.loss * float("nan")) if self.steps == 3 else loss

        def before_eval(self, split):
            self.seen.append(("eval", split))

        def after_save(self, step, folder):
            self.seen.append(("save", step, folder.name))

        def checkpoint_file(self, path, f):
            self.seen.append(("file", path.name))
            return f

    cfg = _cfg(tmp_path / "r", "train.steps=3", "train.eval_every=3", "train.ckpt_every=3")
    hooks = Recorder()
    result = run_training(cfg, data=MemoryData(cfg, 0), hooks=hooks)
    assert result["status"] == "finished" and result["skipped_steps"] == 1
    assert [e for e in hooks.seen if e[0] == "batch"] == [("batch", 0, i) for i in range(4)]  # 4 per epoch
    assert [e for e in hooks.seen if e[0] == "step"] == [("step", 1, True), ("step", 2, True), ("step", 3, False),
                                                         ("step", 4, True)]
    assert [e for e in hooks.seen if e[0] in ("eval", "save")] == [("eval", "val"), ("save", 3, "step_00000003"),
                                                                   ("eval", "test")]
    files = {e[1] for e in hooks.seen if e[0] == "file"}
    assert {"rank_0.json", "rank_0_rng.safetensors", "manifest.json", "latest", "mp_rank_00_model_states.pt"} <= files


def test_too_much_corrupt_data_stops_the_run(tmp_path):
    cfg = _cfg(tmp_path / "r", "data.max_bad_fraction=0.2")
    with pytest.raises(TrainingError, match="corrupt"):
        run_training(cfg, data=MemoryData(cfg, 0, bad_per_batch=1))  # 1 of 3 samples bad: 33%


def test_resume_none_refuses_a_folder_with_checkpoints(tmp_path):
    cfg = _cfg(tmp_path / "r", "train.steps=2")
    run_training(cfg, data=MemoryData(cfg, 0))
    with pytest.raises(ConfigError, match="train.resume=none"):
        run_training(_cfg(tmp_path / "r", "train.steps=2", "train.resume=none"), data=MemoryData(cfg, 0))


def test_class_count_must_match_the_shards(synth_shards, tmp_path):
    cfg = _cfg(tmp_path / "r", f"data.shards={synth_shards}", "avel.num_classes=5")
    with pytest.raises(ConfigError, match="avel.num_classes=9"):
        run_training(cfg)


def test_the_deepspeed_launchers_local_rank_argument_is_not_an_override():
    from avpea_dist.train.entry import _drop_local_rank

    assert _drop_local_rank(["c.yaml", "--local_rank=1", "train.steps=2"]) == ["c.yaml", "train.steps=2"]
    assert _drop_local_rank(["--local_rank", "0", "c.yaml"]) == ["c.yaml"]


class _DamagedShardData(MemoryData):
    """In-memory batches of which a few carry a damaged-shard report (contract 3), one of them twice."""

    def train_batches(self, epoch, start_batch):
        for k, batch in enumerate(super().train_batches(epoch, start_batch), start=start_batch):
            batch["problems"] = {1: ["shard a.tar: sha256 mismatch"],
                                 2: ["shard a.tar: sha256 mismatch", "shard b.tar: 3 of 8 samples read"]}.get(k, [])
            yield batch


def test_epochs_set_the_run_length_and_every_metric_is_recorded(tmp_path, caplog):
    cfg = _cfg(tmp_path / "r", "train.epochs=1", "optim.grad_accum=3", "train.eval_every=100")
    result = run_training(cfg, data=_DamagedShardData(cfg, 0))  # 4 global batches (of 3 micro-batches) an epoch
    assert result["steps"] == 4 and result["step"] == 4
    assert result["data_problems"] == 2 and result["test_skipped"] == 0 and result["val_skipped"] == 0
    warned = [r.getMessage() for r in caplog.records if "sha256 mismatch" in r.getMessage()]
    assert len(warned) == 1, warned
    records = read_jsonl(tmp_path / "r" / "metrics.jsonl")
    train = [r for r in records if r.get("split") == "train"]
    assert train[-1]["data_problems"] == 2
    # Train accuracy and gradient norm appear exactly when the step reports them (contract 6, engine branch).
    from avpea_dist.train.loop import StepResult

    reported = "correct" in StepResult.__dataclass_fields__
    assert ("accuracy" in train[-1]) == reported and ("grad_norm" in train[-1]) == reported
    gates = train[-1]["gates"]
    assert sorted(gates) == ["mlp_a", "mlp_v"] and len(gates["mlp_a"]) == 12  # ViT-Tiny: 12 blocks
    assert all(g > 0 for g in gates["mlp_a"])  # zero-init gates that have moved
    for split in ("val", "test"):
        (rec,) = [r for r in records if r.get("split") == split]
        parts = [rec["accuracy_event"], rec["accuracy_background"]]  # None where a split has no such segment
        assert 0 <= parts[0] <= 1 and (parts[1] is None or 0 <= parts[1] <= 1) and rec["skipped"] == 0
    assert json.loads((tmp_path / "r" / "run.json").read_text())["steps"] == 4


def test_epochs_need_a_whole_batch_per_epoch():
    cfg = tiny_config("train.epochs=1")
    with pytest.raises(ConfigError, match="train.epochs=1 but an epoch has no whole batch"):
        cfg.train.total_steps(0, 1)
    assert cfg.train.total_steps(10, 4) == 3 and tiny_config("train.steps=7").train.total_steps(10, 4) == 7


def test_train_accuracy_and_gradient_norm_come_from_the_step_results():
    from types import SimpleNamespace

    from avpea_dist.train.metrics import TrainStats

    stats = TrainStats()
    stats.add(SimpleNamespace(correct=3, segments=4, grad_norm=2.0))
    stats.add(SimpleNamespace(correct=1, segments=4, grad_norm=4.0))
    assert stats.flush() == {"accuracy": 0.5, "grad_norm": 3.0, "grad_norm_max": 4.0}
    stats.add(SimpleNamespace(loss=1.0))  # a step result without the fields adds nothing
    assert stats.flush() == {}


def test_trainable_backbone_norms_reach_the_optimizer_export_and_checkpoint(tmp_path):
    from safetensors import safe_open

    from avpea_dist.train.engine import param_groups

    cfg = _cfg(tmp_path / "r", "model.train_backbone_norms=true", "train.steps=2")
    model, task = model_and_task(cfg)
    norms = {"vit.blocks.0.norm1.weight", "vit.blocks.11.norm2.bias", "vit.norm.weight"}
    in_optimizer = {id(p) for g in param_groups(model, cfg) for p in g["params"]}
    named = dict(model.named_parameters())
    assert all(id(named[n]) in in_optimizer for n in norms)
    assert not named["vit.patch_embed.proj.weight"].requires_grad
    assert not model_and_task(tiny_config())[0].vit.norm.weight.requires_grad  # off by default

    result = run_training(cfg, data=MemoryData(cfg, 0))
    assert result["status"] == "finished"
    with safe_open(str(tmp_path / "r" / "final" / "adapters.safetensors"), framework="pt") as f:
        exported = {k: f.get_tensor(k) for k in f.keys()}
    assert norms <= set(exported)
    assert not torch_equal(exported["vit.norm.weight"], named["vit.norm.weight"])  # trained, not the init
    from avpea_dist.train.export import load_trainable

    load_trainable(model, tmp_path / "r" / "final" / "adapters.safetensors", cfg.model,
                   task.signature())  # as `avpea eval` does
    assert torch_equal(exported["vit.norm.weight"], model.vit.norm.weight)
    resumed = run_training(_cfg(tmp_path / "r", "model.train_backbone_norms=true", "train.steps=3"),
                           data=MemoryData(cfg, 0))  # the checkpoint (with the norms) loads
    assert resumed["step"] == 3


def torch_equal(a, b):
    import torch

    return torch.equal(a.float(), b.detach().float())


def test_validation_splits_accuracy_into_event_and_background_segments():
    import torch

    from avpea_dist.tasks.avel.task import AVELTask
    from avpea_dist.train.evaluate import evaluate_task

    class Fixed(torch.nn.Module):  # predicts class 0 for every segment; called as the model is: (batch) or (f, a)
        def forward(self, batch, audio=None):
            frames = batch["frames"] if isinstance(batch, dict) else batch
            return torch.nn.functional.one_hot(torch.zeros(frames.shape[:2], dtype=torch.long), 3).float()

    labels = torch.tensor([[0, 0, 2, 1], [2, 2, 2, 0]])  # background is class 2
    batch = {"frames": torch.zeros(2, 4, 3, 1, 1), "audio": torch.zeros(2, 4, 1, 1), "labels": labels, "skipped": 1,
             "key": ["a", "b"]}
    task = AVELTask(tiny_config("avel.num_classes=3"), None)
    m = evaluate_task(task, Fixed(), [batch], torch.device("cpu"))
    assert m["accuracy"] == 3 / 8 and m["accuracy_event"] == 3 / 4 and m["accuracy_background"] == 0.0
    assert m["skipped"] == 1 and m["samples"] == m["clips"] == 2 and m["segments"] == 8


def test_the_lavish_recipe_differs_from_ours_in_the_recipe_only():
    from avpea_dist.config_load import load_config
    from trainkit import REPO

    ours = load_config(f"{REPO}/configs/avel_vitl.yaml")
    lavish = load_config(f"{REPO}/configs/avel_vitl_lavish.yaml")
    assert {k for k, v in vars(ours.model).items() if getattr(lavish.model, k) != v} == {"train_backbone_norms"}
    assert lavish.avel.loss == "bce_softmax" and lavish.data.batch_size == 2
    assert 5 <= lavish.optim.lr_adapter / lavish.optim.lr_head <= 10
    assert (lavish.optim.lr_adapter, lavish.optim.lr_head) == (3e-5, 6e-6)
