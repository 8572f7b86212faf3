"""Global negatives: 2 real ranks (gloo, CPU) x B clips give the loss and the gradients of 1 rank x 2B clips.

Each rank runs the real model (frozen random-init ViT-Tiny, AV-PEA adapters, the retrieval head with a
trainable tiny BERT) on its share of the batch, backpropagates its local loss through the all-gather, then
averages the parameter gradients over the ranks as DeepSpeed's data-parallel all-reduce does. Checked for
both poolings ('mean', 'fine') and for equal (2 + 2) and unequal (3 + 1) shares. Tolerance (fp32): loss
within 1e-5 relative, every trainable gradient within atol 5e-6 + rtol 1e-4 of the single-rank one; the
measured differences are float rounding (largest: 0 on the loss, 5.7e-7 to 8.6e-7 on a gradient
entry, 2026-12-01), printed with -s.
"""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from avpea_dist.runtime import startup
from retrieval_kit import CAPTIONS, make_text_folder

SHARES = ((2, 2), (3, 1))
POOLINGS = ("mean", "fine")


def _config(text_folder: str, pooling: str):
    from avpea_dist.config import Config, ModelConfig
    from avpea_dist.tasks.retrieval.config import RetrievalConfig

    model = ModelConfig(backbone="vit_tiny_patch16_224", pretrained="none", img_size=32, bottleneck=8)
    return Config(task="retrieval", model=model,
                  sections={"retrieval": RetrievalConfig(text_model=text_folder, embed_dim=16, pooling=pooling)})


def _batch(text_folder: str):
    from avpea_dist.datasets.valor.codec import CaptionCodec

    g = torch.Generator().manual_seed(0)
    codec = CaptionCodec(text_folder, 16, train=True)
    batch = codec.collate([codec.parse({"captions": [c]}, f"k{i}") for i, c in enumerate(CAPTIONS[:4])])
    batch["frames"] = torch.randint(0, 256, (4, 10, 3, 32, 32), dtype=torch.uint8, generator=g)
    batch["audio"] = torch.randn(4, 10, 128, 102, generator=g)
    batch["key"] = [f"k{i}" for i in range(4)]
    return batch


def _slice(batch, lo, hi):
    out = {k: v[lo:hi] for k, v in batch.items() if k not in ("caption_video", "captions")}
    out["caption_video"] = torch.arange(hi - lo)
    return out


def _loss_and_grads(text_folder, pooling, state, batch):
    from avpea_dist.models.model import build_model
    from avpea_dist.tasks.retrieval.task import RetrievalTask

    cfg = _config(text_folder, pooling)
    task = RetrievalTask(cfg, None)
    model = build_model(cfg.model, load_weights=False, task=task)
    model.load_state_dict(state)
    model.train()
    loss = task.loss(model(batch), batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _rank(rank, port, text_folder, states, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        batch = _batch(text_folder)
        results = {}
        for pooling in POOLINGS:
            for share in SHARES:
                lo, hi = (0, share[0]) if rank == 0 else (share[0], 4)
                loss, grads = _loss_and_grads(text_folder, pooling, states[pooling], _slice(batch, lo, hi))
                dist.all_reduce(loss)
                for g in grads.values():  # DeepSpeed's data-parallel gradient averaging
                    dist.all_reduce(g)
                    g /= 2
                results[pooling, share] = (loss / 2, grads)
        if rank == 0:
            torch.save(results, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
def test_two_ranks_match_one_rank_on_the_whole_batch(tmp_path):
    from avpea_dist.models.model import build_model
    from avpea_dist.tasks.retrieval.task import RetrievalTask

    folder = str(make_text_folder(tmp_path / "text", dropout=0.0))  # no dropout: the same function on both sides
    batch = _batch(folder)
    states, reference = {}, {}
    for pooling in POOLINGS:
        torch.manual_seed(0)
        cfg = _config(folder, pooling)
        model = build_model(cfg.model, load_weights=False, task=RetrievalTask(cfg, None))
        with torch.no_grad():  # gates start at 0; open them so every adapter parameter gets a gradient
            for n, p in model.named_parameters():
                if p.requires_grad and p.dim() <= 1 and "gate" in n:
                    p.fill_(0.5)
        states[pooling] = model.state_dict()
        reference[pooling] = _loss_and_grads(folder, pooling, states[pooling], batch)
    out = tmp_path / "ranks.pt"
    mp.spawn(_rank, args=(startup.free_port(), folder, states, str(out)), nprocs=2)
    results = torch.load(out, weights_only=True)
    for pooling in POOLINGS:
        ref_loss, ref_grads = reference[pooling]
        assert any("adapter" in n for n in ref_grads) and any(n.startswith("head.text.") for n in ref_grads)
        for share in SHARES:
            loss, grads = results[pooling, share]
            assert torch.allclose(loss, ref_loss, rtol=1e-5), (pooling, share, float(loss), float(ref_loss))
            assert grads.keys() == ref_grads.keys()
            worst = max(float((grads[n] - ref_grads[n]).abs().max()) for n in grads)
            print(f"{pooling} {share}: loss diff {float((loss - ref_loss).abs()):.2e}, worst gradient diff {worst:.2e}")
            for n in grads:
                assert torch.allclose(grads[n], ref_grads[n], rtol=1e-4, atol=5e-6), (pooling, share, n, worst)
