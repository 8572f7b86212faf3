"""bf16 training keeps adapter and head master weights, gradient accumulation and the all-reduce in fp32.

The old setting (DeepSpeed's ``bf16`` mode) casts the whole module, adapters included, to bf16: an update
smaller than ~2^-9 of a weight never reaches the weights the forward runs and the export saves. The
adapters' gates start at zero, so their first updates after the gates open are of exactly that kind
(Adam moves every weight by ~lr, and lr is tiny in warm-up).
"""

from __future__ import annotations

import pytest
import torch

from avpea_dist.train.engine import deepspeed_config, param_groups

from trainkit import fake_batch, model_and_task, tiny_config

LR = 1e-5  # a warm-up learning rate: 1e-5 / ~0.05 (a typical adapter weight) is well below 2^-9


@pytest.fixture(scope="module")
def world_of_one():
    from avpea_dist.runtime import world as avdist

    avdist.init_process_group(avdist.world_info_from_env(), "gloo", 60)
    yield
    avdist.teardown()


def _engine(old: bool):
    import deepspeed

    from avpea_dist.train.engine import build_engine

    cfg = tiny_config("dist.precision=bf16", "dist.zero_stage=2", f"optim.lr_adapter={LR}", f"optim.lr_head={LR}",
                      "optim.warmup_steps=0", "train.steps=1000", "optim.weight_decay=0")
    torch.manual_seed(0)
    model, task = model_and_task(cfg)
    if not old:
        return build_engine(model, cfg)[0], cfg, task
    ds = deepspeed_config(cfg, sum(p.numel() for p in model.parameters() if p.requires_grad))
    ds["bf16"], ds["torch_autocast"] = {"enabled": True}, {"enabled": False}  # what main shipped
    opt = torch.optim.AdamW(param_groups(model, cfg), lr=LR)
    return deepspeed.initialize(model=model, optimizer=opt, config=ds, dist_init_required=False)[0], cfg, task


def _adapter_weights(engine) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in engine.module.named_parameters() if n.endswith("up.weight")}


@pytest.mark.parametrize("old", [False, True], ids=["fp32_master_autocast", "deepspeed_bf16"])
def test_a_small_update_through_a_zero_init_gate_survives_only_with_fp32_masters(world_of_one, old):
    from avpea_dist.train.loop import train_step

    engine, cfg, task = _engine(old)
    gates = [p for n, p in engine.module.named_parameters() if n.endswith(".gate")]
    assert gates and all(float(g.detach().abs().max()) == 0 for g in gates)
    assert train_step(engine, [fake_batch(cfg, 1)], engine.device, task.loss).applied  # opens the gates by ~lr
    assert all(float(g.detach().abs().max()) > 0 for g in gates)
    before = _adapter_weights(engine)
    assert train_step(engine, [fake_batch(cfg, 2)], engine.device, task.loss).applied  # gradients ~ gate ~ lr
    after = _adapter_weights(engine)
    changed = sum(int((after[n] != before[n]).sum()) for n in before) / sum(t.numel() for t in before.values())
    if old:
        assert all(t.dtype == torch.bfloat16 for t in after.values())
        assert changed < 0.05, f"{changed:.1%} of the bf16 adapter weights moved: the old setting kept them"
    else:
        assert all(t.dtype == torch.float32 for t in after.values())
        assert changed > 0.9, f"only {changed:.1%} of the fp32 adapter weights took the update"
        frozen = [p for p in engine.module.parameters() if not p.requires_grad]
        assert all(p.dtype == torch.bfloat16 for p in frozen if p.ndim >= 2)  # the speed is kept
        assert engine.get_data_types() == (torch.float32, torch.float32)  # weights, gradient accumulation
        assert engine.communication_data_type == torch.float32  # the gradient all-reduce
        assert engine.torch_autocast_enabled() and engine.torch_autocast_dtype() == torch.bfloat16
