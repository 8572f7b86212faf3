"""Speed never silently changes the math: each fast path against the plain path on a tiny model.

Tolerances: packing both streams into one call is exact up to float reassociation (1e-5); a bf16 frozen
backbone (the GPU default) changes the loss by well under 5% relative and keeps every adapter gradient
pointing the same way (cosine > 0.95); torch.compile (inductor, CPU here) matches eager to 1e-4.
"""

import pytest
import torch
import torch.nn.functional as F

from avpea_dist.config import ModelConfig
from avpea_dist.models.model import build_model
from avpea_dist.tasks.avel.head import AVELHead

TINY = dict(backbone="vit_tiny_patch16_224", pretrained="none", img_size=64)


def avel_head(embed_dim, streams):
    return AVELHead(embed_dim * len(streams), 32, 9)


def loss_and_grads(model, autocast=False):
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, 2, 3, 64, 64), generator=g, dtype=torch.uint8)
    audio = torch.randn(2, 2, 128, 102, generator=g)
    labels = torch.randint(0, 9, (2, 2), generator=g)
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = F.cross_entropy(model(frames, audio).flatten(0, 1), labels.flatten())
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def opened_model(**extra):
    """A model whose gates are open, so that gradients reach every adapter weight."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY, **extra), task=avel_head)
    for name, p in model.named_parameters():
        if name.endswith(".gate"):
            p.data.fill_(0.5)
    return model


def test_fused_streams_match_separate_calls():
    fused = opened_model(fuse_streams=True)
    plain = opened_model(fuse_streams=False)
    plain.load_state_dict(fused.state_dict())
    loss_f, grads_f = loss_and_grads(fused)
    loss_p, grads_p = loss_and_grads(plain)
    torch.testing.assert_close(loss_f, loss_p, atol=1e-5, rtol=1e-5)
    for name in grads_p:
        torch.testing.assert_close(grads_f[name], grads_p[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.slow
def test_bf16_frozen_backbone_stays_close_to_fp32():
    fp32 = opened_model()
    bf16 = opened_model()
    bf16.load_state_dict(fp32.state_dict())
    bf16.set_backbone_dtype(torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for n, p in bf16.vit.named_parameters() if ".adapters." not in n)
    assert all(p.dtype == torch.float32 for p in bf16.parameters() if p.requires_grad)
    loss_32, grads_32 = loss_and_grads(fp32)
    loss_16, grads_16 = loss_and_grads(bf16, autocast=True)
    assert abs(loss_16 - loss_32) / loss_32 < 0.05
    for name, g in grads_32.items():
        cos = F.cosine_similarity(g.flatten(), grads_16[name].flatten().float(), dim=0)
        assert cos > 0.95, f"{name}: cosine {cos:.3f}"


@pytest.mark.slow
def test_compiled_model_matches_eager():
    eager = opened_model()
    compiled = opened_model()
    for model in (eager, compiled):  # two blocks keep inductor's CPU compile short; the graph is the same
        model.vit.blocks = model.vit.blocks[:2]
    compiled.load_state_dict(eager.state_dict())
    compiled.compile()
    loss_e, grads_e = loss_and_grads(eager)
    loss_c, grads_c = loss_and_grads(compiled)
    torch.testing.assert_close(loss_c, loss_e, atol=1e-4, rtol=1e-4)
    for name in grads_e:
        torch.testing.assert_close(grads_c[name], grads_e[name], atol=1e-4, rtol=1e-3, msg=name)
