"""Each engine lever of issue 14, timed alone on the paper configuration's trainable tensors.

    python benchmarks/engine_levers.py [--reps 20] [--json PATH]

No forward or backward: the ~600 trainable tensors of the paper configuration (13.8M parameters) get random
gradients, and each piece of per-step work the engine does on them is timed by this process's CPU time
(median of --reps), old way against new way, so that a machine shared with other jobs disturbs it little:
  finite_check   per-tensor isfinite + stack (the old step)     vs  one foreach norm (the new ZeRO-0 step)
  clip           DeepSpeed's fp32 clip_grad_norm_ (Python loop)  vs  torch's foreach clip_grad_norm_
  adamw          torch AdamW foreach=False (the old engine)      vs  foreach=True
  allreduce_1    DeepSpeed's 1-rank gradient all-reduce (flatten, scale by 1, copy back)  vs  none
Compare each saving with the plain step time that engine_overhead.py prints.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors  # noqa: E402

from avpea_dist.config_load import load_config  # noqa: E402
from avpea_dist.models.model import build_model  # noqa: E402
from avpea_dist.tasks.registry import build_task  # noqa: E402


def cpu_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/avel_vitl.yaml")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29571")
    import deepspeed
    from deepspeed.runtime.utils import clip_grad_norm_ as ds_clip

    deepspeed.init_distributed(dist_backend="gloo", verbose=False)  # DeepSpeed's clip asks for its group

    cfg = load_config(args.config, ["model.pretrained=none", "model.img_size=32", "model.mel_bins=32",
                                    "model.audio_frames=32"])
    model = build_model(cfg.model, load_weights=False, task=build_task(cfg, None))
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    grads = [p.grad for p in params]

    def finite_old() -> bool:
        return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())

    def finite_new() -> float:
        return float(torch.nn.utils.get_total_norm(grads, foreach=True))

    def clip_ds() -> None:
        ds_clip(model.parameters(), 1e9)  # a bound it never reaches: the work, not a change

    def clip_torch() -> None:
        torch.nn.utils.clip_grad_norm_(params, 1e9, foreach=True)

    opts = {f: torch.optim.AdamW(params, lr=1e-9, foreach=f) for f in (False, True)}

    def allreduce_1() -> None:
        flat = _flatten_dense_tensors(grads)
        flat.mul_(1.0)
        for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            g.copy_(synced)

    rows = {
        "finite_check": (cpu_ms(finite_old, args.reps), cpu_ms(finite_new, args.reps)),
        "clip": (cpu_ms(clip_ds, args.reps), cpu_ms(clip_torch, args.reps)),
        "adamw": (cpu_ms(opts[False].step, args.reps), cpu_ms(opts[True].step, args.reps)),
        "allreduce_1": (cpu_ms(allreduce_1, args.reps), 0.0),
    }
    print(f"{len(params)} trainable tensors, {sum(p.numel() for p in params):,} parameters; CPU ms per step "
          f"(median of {args.reps}, {args.threads} thread(s), load {os.getloadavg()[0]:.1f})")
    for name, (old, new) in rows.items():
        print(f"{name:<14} old {old:8.1f}  new {new:8.1f}  saved {old - new:8.1f}")
    torch.distributed.destroy_process_group()
    if args.json:
        from avpea_dist.fileio import atomic_write_json

        atomic_write_json(Path(args.json), {"tensors": len(params), "loadavg": list(os.getloadavg()),
                                            "threads": args.threads, "reps": args.reps,
                                            "cpu_ms": {k: {"old": o, "new": n} for k, (o, n) in rows.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
