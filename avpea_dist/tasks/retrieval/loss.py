"""Symmetric InfoNCE with global negatives: every rank's clips against every rank's captions.

Each rank all-gathers all ranks' clip and text embeddings WITH gradients (``torch.distributed.nn``'s
all-gather, whose backward sums every rank's gradient into the owner's rows) and computes the loss of its
own rows only against all columns, as open_clip does with ``local_loss=True`` and ``gather_with_grad=True``.

Scale. Let N be the global batch and B_r this rank's rows. This rank's loss is
  loss_r = (W / N) * sum over own rows i of (CE_t2v(i) + CE_v2t(i)) / 2,
so the mean of loss_r over the W ranks is the single-process loss on the concatenated batch (equal B_r:
the plain mean over own rows). Gradients: the gather's backward makes this rank's embedding gradient the
sum over ranks of d loss_r' / d e, i.e. W times the single-process gradient; DeepSpeed's data-parallel
all-reduce then AVERAGES parameter gradients over the W ranks, giving exactly the single-process gradient
(the temperature's gradient, which is not gathered, is averaged the same way). The 2-rank test checks it.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_gather_grad(x: torch.Tensor) -> list[torch.Tensor]:
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        # torch 2.13+ marks it deprecated in favour of a private module; it works unchanged in the range we support
        warnings.simplefilter("ignore", FutureWarning)
        return list(all_gather(x))


def gather_rows(*tensors: torch.Tensor) -> tuple[list[torch.Tensor], int, int]:
    """All-gather each tensor along dim 0 (with gradients), ranks' rows concatenated in rank order.
    Ranks may hold different row counts (a skipped sample) and, beyond dim 0, different lengths along
    dim 1 (token counts: padded with zeros to the longest). -> (gathered, this rank's first row, total rows)."""
    rank, size = world()
    if size == 1:
        return list(tensors), 0, tensors[0].shape[0]
    dims = torch.tensor([[t.shape[0], t.shape[1] if t.dim() > 1 else 1] for t in tensors], dtype=torch.long)
    all_dims = [torch.zeros_like(dims) for _ in range(size)]
    dist.all_gather(all_dims, dims.to(_comm_device(tensors[0])))
    all_dims = [d.cpu() for d in all_dims]
    rows = [int(d[0, 0]) for d in all_dims]
    out = []
    for j, t in enumerate(tensors):
        n_max = max(int(d[j, 0]) for d in all_dims)
        pad = [0, 0] * (t.dim() - 1) + [0, n_max - t.shape[0]]
        if t.dim() > 1:
            l_max = max(int(d[j, 1]) for d in all_dims)
            pad[-3] = l_max - t.shape[1]  # F.pad lists dims last-first: [-3] pads the end of dim 1
        parts = _all_gather_grad(F.pad(t, pad) if any(pad) else t)
        out.append(torch.cat([p[:n] for p, n in zip(parts, rows)]))
    return out, sum(rows[:rank]), sum(rows)


def _comm_device(t: torch.Tensor) -> torch.device:
    return t.device if dist.get_backend() == "nccl" else torch.device("cpu")


def contrastive_loss(sim_rows: torch.Tensor, sim_cols: torch.Tensor, first: int, total: int) -> torch.Tensor:
    """``sim_rows`` (B_r, N): this rank's captions against all clips (text-to-video logits, already scaled);
    ``sim_cols`` (B_r, N): this rank's clips against all captions. Row i's positive is global column
    ``first + i`` (one caption per clip). -> loss_r as in the module docstring."""
    b = sim_rows.shape[0]
    target = torch.arange(first, first + b, device=sim_rows.device)
    t2v = F.cross_entropy(sim_rows.float(), target, reduction="sum")
    v2t = F.cross_entropy(sim_cols.float(), target, reduction="sum")
    return (t2v + v2t) / 2 * (world()[1] / total)
