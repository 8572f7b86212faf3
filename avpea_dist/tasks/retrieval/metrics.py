"""Retrieval metrics on a full caption x clip similarity matrix.

text-to-video (t2v): every caption is a query; its rank is the position of its own clip among all clips.
video-to-text (v2t): every clip is a query over all captions; with several captions per clip, the clip
counts as found at the BEST rank of any of its captions, as VALOR's evaluation does.
Ranks start at 1. Ties count against the query (a clip scoring exactly as high as the right one is ranked
ahead of it), so a degenerate model with constant scores gets the worst ranks, never R@1 = 1.
Recalls are fractions in [0, 1]; ``r_sum`` is the sum of the six recalls (0 to 6), the selection metric.
"""

from __future__ import annotations

from typing import Any

import torch

RECALL_AT = (1, 5, 10)


def _ranks(sim: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """sim (Q, N), target (Q,) -> 1-based rank of each query's target, ties counted against it."""
    right = sim.gather(1, target[:, None])
    return (sim >= right).sum(1)  # the target itself is one of them: 1 + those ahead or tied


def t2v_ranks(sim: torch.Tensor, caption_video: torch.Tensor) -> torch.Tensor:
    """sim (C captions, V clips) -> (C,) rank of each caption's clip."""
    return _ranks(sim, caption_video)


def v2t_ranks(sim: torch.Tensor, caption_video: torch.Tensor) -> torch.Tensor:
    """sim (C, V) -> (V,) for each clip, the best rank among all captions of any of its own captions."""
    sim_t = sim.t()  # (V, C): row v ranks every caption for clip v
    C, V = sim.shape
    per_caption = torch.cat([_ranks(sim_t[caption_video[lo:lo + 1024]], torch.arange(lo, min(C, lo + 1024)))
                             for lo in range(0, C, 1024)])  # rank of caption c in its own clip's row, in chunks
    ranks = torch.full((V,), C + 1, dtype=torch.long).scatter_reduce(0, caption_video, per_caption, "amin")
    if bool((ranks > C).any()):
        missing = torch.nonzero(ranks > C).flatten().tolist()[:5]
        raise ValueError(f"clips {missing} have no caption; every clip needs at least one to be ranked")
    return ranks


def summarise(ranks: torch.Tensor, prefix: str) -> dict[str, float]:
    r = ranks.double()
    out = {f"{prefix}_r{k}": float((r <= k).double().mean()) for k in RECALL_AT}
    out[f"{prefix}_median_rank"] = float(r.quantile(0.5))  # numpy's median: the middle pair averaged
    out[f"{prefix}_mean_rank"] = float(r.mean())
    return out


def retrieval_metrics(sim: torch.Tensor, caption_video: torch.Tensor) -> dict[str, Any]:
    """sim (C, V): similarity of caption c and clip v; caption_video (C,): the clip of each caption.
    -> t2v_r1/5/10, t2v_median_rank, t2v_mean_rank, the same for v2t, r_sum, captions, clips."""
    sim = sim.detach().double().cpu()
    caption_video = caption_video.long().cpu()
    C, V = sim.shape
    if C == 0 or V == 0:
        raise ValueError(f"a {C} x {V} similarity matrix has nothing to rank: the split gave no clips or captions")
    if caption_video.shape != (C,) or int(caption_video.min()) < 0 or int(caption_video.max()) >= V:
        raise ValueError(f"caption_video must be ({C},) clip indices in [0, {V})")
    out: dict[str, Any] = {**summarise(t2v_ranks(sim, caption_video), "t2v"),
                           **summarise(v2t_ranks(sim, caption_video), "v2t")}
    out["r_sum"] = sum(out[f"{d}_r{k}"] for d in ("t2v", "v2t") for k in RECALL_AT)
    out.update(captions=C, clips=V)
    return out
