"""Time the system's training step against a naive reference of the same model, in one process.

    python benchmarks/step.py                          # paper configuration on the GPU
    python benchmarks/step.py --config configs/avel_tiny.yaml --device cpu --steps 3 --warmup 1 \
        --matmul-size 512 --no-compile --max-batch 0   # the same code paths on CPU (a test runs this)

Variants, one lever at a time (see benchmarks/RESULTS.md for each prediction and outcome):
  reference      fp32 weights, eager, the two streams as separate calls, plain torch AdamW, no DeepSpeed
                 (what LAVisH-style code does)
  bf16_frozen    + the frozen backbone stored in bf16 once, adapters/head fp32 under bf16 autocast
  fused_streams  + both streams through each frozen token-wise layer in one call
  system         the system's own step: DeepSpeed engine (fp32 adapters/head, bf16 autocast over the bf16
                 frozen backbone, the configured ZeRO stage), fused AdamW, fused streams, torch.compile
                 (unless --no-compile)
Each prints clips/s, step time (median and p10-p90 over the timed steps), TFLOP/s from FlopCounterMode on one
real step, MFU against the bf16 (fp32 on CPU) matrix-product rate measured here, peak memory, compile time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from avpea_dist.config import Config

from avpea_dist.config_load import load_config  # noqa: E402
from avpea_dist.fileio import atomic_write_json  # noqa: E402
from avpea_dist.models.model import build_model  # noqa: E402
from avpea_dist.tasks.registry import build_task  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_rate(device: torch.device, n: int) -> float:
    """Achievable dense matrix-product FLOP/s: bf16 on GPU (the MFU reference), fp32 on CPU."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 20 if device.type == "cuda" else 3
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def random_batch(cfg: Config, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    m = cfg.model
    g = torch.Generator(device="cpu").manual_seed(0)
    return {
        "frames": torch.randint(0, 256, (batch, m.num_segments, 3, m.img_size, m.img_size), generator=g,
                                dtype=torch.uint8).to(device),
        "audio": torch.randn(batch, m.num_segments, m.mel_bins, m.audio_frames, generator=g).to(device),
        "labels": torch.randint(0, cfg.avel.num_classes, (batch, m.num_segments), generator=g).to(device),
    }


def loss_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten())


# ------------------------------------------------------------------------------------------------
# The step functions. Each returns (step(batch) -> None, model, compile_seconds).


def plain_step(cfg: Config, device: torch.device, bf16_frozen: bool, fuse: bool):
    cfg.model.fuse_streams = fuse
    model = build_model(cfg.model, load_weights=False, task=build_task(cfg, None)).to(device)
    if bf16_frozen:
        model.set_backbone_dtype(torch.bfloat16)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda" and bf16_frozen)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if bf16_frozen else contextlib.nullcontext())

    def step(batch: dict[str, torch.Tensor]) -> None:
        with autocast:
            loss = loss_of(model(batch["frames"], batch["audio"]), batch["labels"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, model, 0.0


def system_step(cfg: Config, device: torch.device, compile_model: bool):
    """The training loop's own step, on the DeepSpeed engine the training command builds."""
    from avpea_dist.train.engine import build_engine

    cfg.model.fuse_streams = True
    task = build_task(cfg, None)
    model = build_model(cfg.model, load_weights=False, task=task)
    engine, _ = build_engine(model, cfg)
    compile_s = 0.0
    if compile_model:
        engine.compile()
    from avpea_dist.train.loop import train_step

    def step(batch: dict[str, torch.Tensor]) -> None:
        train_step(engine, [batch], device, task.loss)

    if compile_model:  # the first calls pay the compile: time them apart
        batch = random_batch(cfg, cfg.data.batch_size, device)
        t = time.perf_counter()
        step(batch)
        sync(device)
        compile_s = time.perf_counter() - t
    return step, engine.module, compile_s


# ------------------------------------------------------------------------------------------------


def measure(name: str, make: Callable[[], tuple], cfg: Config, batch: int, device: torch.device, steps: int,
            warmup: int, peak_flops: float) -> dict[str, Any]:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    step, model, compile_s = make()
    data = random_batch(cfg, batch, device)
    for _ in range(warmup):
        step(data)
    sync(device)
    with FlopCounterMode(display=False) as counter:
        step(data)
    sync(device)
    flops = counter.get_total_flops()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step(data)
        sync(device)
        times.append(time.perf_counter() - t)
    times.sort()
    median = statistics.median(times)
    result = {
        "variant": name, "batch_clips": batch, "steps_timed": steps,
        "step_s_median": median, "step_s_p10": times[len(times) // 10], "step_s_p90": times[(9 * len(times)) // 10],
        "clips_per_s": batch / median, "flops_per_step": flops, "tflops": flops / median / 1e12,
        "mfu": flops / median / peak_flops, "compile_s": compile_s,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
    }
    print(f"{name:<14} {result['clips_per_s']:8.1f} clips/s  step {1e3 * median:8.1f} ms "
          f"[{1e3 * result['step_s_p10']:.1f}-{1e3 * result['step_s_p90']:.1f}]  {result['tflops']:8.3f} TFLOP/s  "
          f"MFU {100 * result['mfu']:5.1f}%  peak {result['peak_gib'] or 0:6.1f} GiB  compile {compile_s:5.1f} s",
          flush=True)
    del step, model
    return result


def largest_batch(make_for_batch: Callable[[int], Callable[[], None]], start: int, limit: int) -> int:
    """Double until out of memory, then bisect; each probe runs two steps."""
    def fits(b: int) -> bool:
        try:
            run = make_for_batch(b)
            run()
            run()
            return True
        except torch.OutOfMemoryError:
            return False
        finally:
            torch.cuda.empty_cache()

    lo, hi = 0, None
    b = start
    while b <= limit:
        if fits(b):
            lo, b = b, b * 2
        else:
            hi = b
            break
    if hi is None:
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def init_single_process(device: torch.device) -> None:
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29561")
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/avel_vitl.yaml")
    ap.add_argument("--batch", type=int, default=8, help="clips per step")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant (>= 20 for the record)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--matmul-size", type=int, default=8192)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--variants", default="reference,bf16_frozen,fused_streams,system")
    ap.add_argument("--max-batch", type=int, default=256, help="search the largest batch up to this (0: skip)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(0)
        torch.backends.cuda.matmul.allow_tf32 = False  # the reference is honest fp32
    else:
        os.environ["DS_ACCELERATOR"] = "cpu"
    base = ["data.batch_size=%d" % args.batch, "model.pretrained=none"] + args.overrides
    if device.type == "cpu":
        base += ["dist.precision=fp32", "dist.zero_stage=0"]
    init_single_process(device)

    peak = matmul_rate(device, args.matmul_size)
    print(f"device {torch.cuda.get_device_name(0) if device.type == 'cuda' else platform.processor() or 'cpu'}; "
          f"matrix-product rate {peak / 1e12:.3f} TFLOP/s ({'bf16' if device.type == 'cuda' else 'fp32'}, "
          f"{args.matmul_size}^3)", flush=True)

    def cfg() -> Config:
        return load_config(args.config, base)

    makers = {
        "reference": lambda: plain_step(cfg(), device, bf16_frozen=False, fuse=False),
        "bf16_frozen": lambda: plain_step(cfg(), device, bf16_frozen=device.type == "cuda", fuse=False),
        "fused_streams": lambda: plain_step(cfg(), device, bf16_frozen=device.type == "cuda", fuse=True),
        "system": lambda: system_step(cfg(), device, compile_model=not args.no_compile),
    }
    results = []
    for name in args.variants.split(","):
        if name not in makers:
            raise SystemExit(f"unknown variant '{name}'; choose from {', '.join(makers)}")
        results.append(measure(name, makers[name], cfg(), args.batch, device, args.steps, args.warmup, peak))
    by = {r["variant"]: r for r in results}
    ref = by.get("reference")
    sysr = by.get("system") or results[-1]
    ratio = sysr["clips_per_s"] / ref["clips_per_s"] if ref else None
    if ratio:
        print(f"system / reference: {ratio:.1f}x clips/s")

    max_batch = None
    if args.max_batch and device.type == "cuda" and "system" in by:
        def make_for_batch(b: int) -> Callable[[], None]:
            step, _, _ = system_step(load_config(args.config, base + [f"data.batch_size={b}"]), device,
                                     compile_model=False)
            data = random_batch(cfg(), b, device)
            return lambda: (step(data), sync(device))
        max_batch = largest_batch(make_for_batch, args.batch, args.max_batch)
        print(f"largest batch that fits (system step, eager): {max_batch} clips")

    card = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    record = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": card,
        "driver": _driver() if device.type == "cuda" else None,
        "torch": torch.__version__, "config": args.config, "overrides": args.overrides,
        "matmul_tflops": peak / 1e12, "mfu": sysr["mfu"], "clips_per_s": sysr["clips_per_s"],
        "reference_clips_per_s": ref["clips_per_s"] if ref else None, "speedup": ratio,
        "peak_gib": sysr["peak_gib"], "largest_batch": max_batch, "variants": results,
    }
    slug = "".join(c if c.isalnum() else "-" for c in card).strip("-").lower()
    path = Path(args.out) / f"{dt.date.today().isoformat()}-{slug}.json"
    atomic_write_json(path, record)
    print(f"wrote {path}")
    return 0


def _driver() -> str | None:
    import subprocess

    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip() or None
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
