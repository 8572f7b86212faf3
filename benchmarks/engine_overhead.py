"""What the system's training step costs on top of a plain torch loop over the same model (issue 14).

    python benchmarks/engine_overhead.py --json benchmarks/results/engine_overhead.json
    python benchmarks/engine_overhead.py --tiny --steps 2 --rounds 1    # seconds: the test runs this

In one process per rank, the same model, data and batch, at each ZeRO stage (0, 1, 2) and on 1 and 2 real
ranks (gloo on CPU, NCCL on a GPU):
  (a) plain   forward, backward, (DDP gradient all-reduce on 2 ranks), foreach clip, torch AdamW, zero_grad
  (b) system  ``avpea_dist.train.loop.train_step`` on the DeepSpeed engine that ``avpea train`` builds
Timings alternate: plain, system, plain, system, ..., plain (the plain loop is measured before and after
every system round, so a change in machine load shows in both). Each row prints the median and the
p10-p90 range of the step time, and the ratio (b)/(a) of the medians, by wall time and by the rank's own
CPU time (which a machine shared with other jobs disturbs far less); the JSON record keeps every step
time, the machine, its load average before and after, ``ratios`` (wall time, the worst over rank counts
per stage) and ``cpu_time_ratios``. The run also measures activation sizes and predicts the real paper
configuration's peak GPU memory at 8 and 16 clips per step. Default: the paper configuration's parameter structure (ViT-L, 24 blocks, bottleneck 128, the
paper's head: 340 trainable tensors, 13.8M parameters) with small inputs (32x32 frames and spectrograms,
random-init backbone), one clip of 10 segments per step, so that the engine's own cost is visible.
``--profile`` adds a torch-profiler table of the system step's heaviest operators.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import resource
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

SMALL = ["model.pretrained=none", "model.img_size=32", "model.mel_bins=32", "model.audio_frames=32",
         "data.batch_size=1", "data.num_workers=0"]
TINY = ["model.backbone=vit_tiny_patch16_224", "model.bottleneck=24", "avel.head_hidden=32",
        "model.num_segments=2"]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _batch(cfg: Any, device: torch.device) -> dict[str, Any]:
    m, b = cfg.model, cfg.data.batch_size
    g = torch.Generator().manual_seed(0)
    return {"frames": torch.randint(0, 256, (b, m.num_segments, 3, m.img_size, m.img_size), generator=g,
                                    dtype=torch.uint8).to(device),
            "audio": torch.randn(b, m.num_segments, m.mel_bins, m.audio_frames, generator=g).to(device),
            "labels": torch.randint(0, cfg.avel.num_classes, (b, m.num_segments), generator=g).to(device),
            "key": [f"clip{i}" for i in range(b)], "skipped": 0}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Plain:
    """The plain loop: what a researcher writes without an engine (DDP across ranks, torch AdamW)."""

    def __init__(self, cfg: Any, device: torch.device) -> None:
        import torch.distributed as dist
        import torch.nn.functional as F

        from avpea_dist.models.model import build_model
        from avpea_dist.tasks.registry import build_task
        from avpea_dist.train.engine import resolve_precision

        torch.manual_seed(0)
        self.model = build_model(cfg.model, load_weights=False, task=build_task(cfg, None)).to(device)
        self.bf16 = resolve_precision(cfg.dist.precision) == "bf16"
        if self.bf16:
            self.model.set_backbone_dtype(torch.bfloat16)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.net: Any = self.model
        if dist.is_initialized() and dist.get_world_size() > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(self.model)
        cuda = device.type == "cuda"
        self.opt = torch.optim.AdamW(self.params, lr=1e-4, fused=cuda)  # torch's own choice on CPU: per tensor
        self.clip, self.device, self.F = cfg.optim.grad_clip, device, F

    def step(self, batch: dict[str, Any]) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.net(batch["frames"], batch["audio"])
        loss = self.F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten())
        loss.backward()
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip, foreach=True)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


class System:
    """The system's own step on the engine ``avpea train`` builds; the frozen backbone shares the plain
    model's tensors (read-only), so a rank holds one copy of ViT-L."""

    def __init__(self, cfg: Any, device: torch.device, share_with: torch.nn.Module) -> None:
        from avpea_dist.models.model import build_model
        from avpea_dist.tasks.registry import build_task
        from avpea_dist.train.engine import build_engine

        self.task = build_task(cfg, None)
        torch.manual_seed(0)
        model = build_model(cfg.model, load_weights=False, task=self.task)
        frozen = {n: p for n, p in share_with.named_parameters() if not p.requires_grad}
        for n, p in model.named_parameters():
            if not p.requires_grad:
                p.data = frozen[n].data
        self.engine, _ = build_engine(model, cfg)
        self.device = device

    def step(self, batch: dict[str, Any]) -> None:
        from avpea_dist.train.loop import train_step

        r = train_step(self.engine, [batch], self.device, self.task.loss)
        if not r.applied:
            raise RuntimeError("the benchmark's step was skipped (non-finite): the timing would be meaningless")


def _time(fn: Any, batch: dict[str, Any], n: int, device: torch.device, wall: list[float], cpu: list[float]) -> None:
    """Append ``n`` steps' wall time and this process's CPU time (all its threads): on a machine shared with
    other jobs the CPU time still counts this rank's own work, where the wall time also counts waiting."""
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        fn(batch)
        _sync(device)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)


def _summary(times: list[float]) -> dict[str, float]:
    s = sorted(times)
    q = statistics.quantiles(s, n=10, method="inclusive") if len(s) > 1 else [s[0]] * 9
    return {"median_s": statistics.median(s), "p10_s": q[0], "p90_s": q[-1], "n": len(s)}


def _profile(system: System, batch: dict[str, Any], steps: int, rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for _ in range(steps):
            system.step(batch)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def activation_bytes(config: str, img: int, mel: int, frames: int) -> tuple[int, int]:
    """(bytes the backward keeps, tokens) for one clip at these input sizes, bf16 autocast over a bf16 frozen
    backbone (the GPU setting), counted by the autograd saved-tensor hooks; weights are not counted."""
    from avpea_dist.config_load import load_config
    from avpea_dist.models.model import build_model
    from avpea_dist.tasks.registry import build_task

    cfg = load_config(config, SMALL + [f"model.img_size={img}", f"model.mel_bins={mel}",
                                     f"model.audio_frames={frames}"])
    torch.manual_seed(0)
    model = build_model(cfg.model, load_weights=False, task=build_task(cfg, None))
    model.set_backbone_dtype(torch.bfloat16)
    weights = {p.data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:
            seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    b = _batch(cfg, torch.device("cpu"))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        model(b["frames"], b["audio"])
    patch = model.vit.patch_embed.patch_size[0]
    tokens = cfg.model.num_segments * (1 + (img // patch) ** 2 + 1 + (mel // patch) * (frames // patch))
    return sum(seen.values()), tokens


def predict_gpu_memory(config: str) -> dict[str, Any]:
    """Peak GPU memory of the real paper configuration (224x224, 128x102 audio) at 8 and 16 clips per step,
    from activation sizes measured at two small input sizes (linear in tokens: fused attention keeps O(N))."""
    from avpea_dist.config_load import load_config
    from avpea_dist.models.model import build_model, param_counts
    from avpea_dist.tasks.registry import build_task

    (b1, t1), (b2, t2) = activation_bytes(config, 32, 32, 32), activation_bytes(config, 64, 64, 64)
    per_token = (b2 - b1) / (t2 - t1)
    real = load_config(config, ["model.pretrained=none"]).model
    patch = 16
    tokens = real.num_segments * (1 + (real.img_size // patch) ** 2 + 1 + (real.mel_bins // patch) *
                                  (real.audio_frames // patch))
    small = load_config(config, SMALL)
    counts = param_counts(build_model(small.model, load_weights=False, task=build_task(small, None)))
    # bf16 frozen weights; fp32 trainable weights, gradients and AdamW's two moments (ZeRO 0: all on one GPU).
    static = 2 * counts["backbone_params"] + 16 * counts["trainable_params"]
    fixed = b1 - per_token * t1
    out = {"activation_bytes_per_token": per_token, "tokens_per_clip": tokens, "static_gib": static / 2**30,
           "measured": [{"tokens": t1, "bytes": b1}, {"tokens": t2, "bytes": b2}]}
    for clips in (8, 16):
        out[f"predicted_peak_gib_{clips}_clips"] = (static + fixed + per_token * tokens * clips) / 2**30
    return out


def measure_rank(rank: int, world: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every stage on this rank's process group; rank 0's record is the one kept."""
    import deepspeed
    import torch.distributed as dist

    from avpea_dist.config_load import load_config

    device = torch.device("cuda", rank) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo", verbose=False)
    rows = []
    memory = predict_gpu_memory(args.config) if args.memory and world == 1 and not args.tiny else None
    try:
        for stage in args.stages:
            cfg = load_config(args.config, SMALL + (TINY if args.tiny else []) + args.overrides +
                              [f"dist.zero_stage={stage}"] + (["dist.precision=fp32"] if device.type == "cpu" else []))
            batch = _batch(cfg, device)
            plain = Plain(cfg, device)
            system = System(cfg, device, plain.model)
            for _ in range(args.warmup):
                plain.step(batch)
                system.step(batch)
            _sync(device)
            plain_t, system_t, plain_c, system_c = [], [], [], []
            for _ in range(args.rounds):
                _time(plain.step, batch, args.steps, device, plain_t, plain_c)
                _time(system.step, batch, args.steps, device, system_t, system_c)
            _time(plain.step, batch, args.steps, device, plain_t, plain_c)
            table = _profile(system, batch, args.profile, 25) if args.profile and rank == 0 else None
            a, b = _summary(plain_t), _summary(system_t)
            trainable = [p for p in plain.model.parameters() if p.requires_grad]
            rows.append({"zero_stage": stage, "ranks": world, "plain": a, "system": b,
                         "ratio": b["median_s"] / a["median_s"], "plain_times_s": plain_t,
                         "system_times_s": system_t, "cpu_ratio": statistics.median(system_c) / statistics.median(plain_c),
                         "plain_cpu_s": plain_c, "system_cpu_s": system_c, "trainable_tensors": len(trainable),
                         "trainable_params": sum(p.numel() for p in trainable), "profile": table})
            del plain, system
            gc.collect()
            dist.barrier()
    finally:
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        dist.barrier()
        dist.destroy_process_group()
    return {"rank": rank, "rows": rows, "peak_rss_gib": peak_rss, "gpu_memory_prediction": memory,
            "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, args: argparse.Namespace, queue: Any) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(args.threads // world if args.threads else max(1, (os.cpu_count() or 1) // world))
    try:
        queue.put((rank, measure_rank(rank, world, args)))
    except BaseException as e:  # the parent reports it instead of waiting forever
        queue.put((rank, f"{type(e).__name__}: {e}"))
        raise


def run_world(world: int, args: argparse.Namespace) -> dict[str, Any]:
    """``world`` real rank processes (spawned), each measuring every stage; returns rank 0's record."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue, port = ctx.Queue(), _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, args, queue)) for r in range(world)]
    for p in procs:
        p.start()
    got: dict[int, Any] = {}
    try:
        for _ in range(world):
            rank, value = queue.get(timeout=args.timeout)
            got[rank] = value
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    errors = [f"rank {r}: {v}" for r, v in sorted(got.items()) if isinstance(v, str)]
    if errors:
        raise SystemExit("engine_overhead: " + "; ".join(errors))
    record = got[0]
    record["peak_rss_gib_per_rank"] = [got[r]["peak_rss_gib"] for r in sorted(got)]
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/avel_vitl.yaml")
    ap.add_argument("--stages", default="0,1,2", help="ZeRO stages, comma-separated")
    ap.add_argument("--ranks", default="1,2", help="rank counts, comma-separated")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round and loop")
    ap.add_argument("--rounds", type=int, default=3, help="system rounds (plain: one more)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps of each loop first")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per host (0: all cores), split over ranks")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="ViT-Tiny structure, 2 segments: a smoke test")
    ap.add_argument("--profile", type=int, default=0, help="profile this many system steps on rank 0")
    ap.add_argument("--no-memory", dest="memory", action="store_false",
                    help="skip the activation-size measurement behind the GPU memory prediction")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds to wait for a rank count to finish")
    ap.add_argument("--json", default=None, help="write the record here")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. avel.num_classes=10")
    args = ap.parse_args(argv)
    args.stages = [int(s) for s in args.stages.split(",")]
    if args.device == "cpu":
        os.environ["DS_ACCELERATOR"] = "cpu"
    load_before = os.getloadavg()
    started = time.time()
    print(f"engine overhead: {args.config} {'(tiny structure) ' if args.tiny else ''}stages {args.stages}, "
          f"ranks {args.ranks}; {args.steps} steps x {args.rounds} rounds; {os.cpu_count()} cores, load "
          f"{load_before[0]:.1f}", flush=True)
    print(f"{'ZeRO':>4} {'ranks':>5} {'plain ms (p10-p90)':>24} {'system ms (p10-p90)':>24} {'ratio':>6} "
          f"{'cpu-time ratio':>14}", flush=True)
    records = []
    for world in [int(w) for w in args.ranks.split(",")]:
        rec = run_world(world, args)
        records.append(rec)
        for row in rec["rows"]:
            a, b = row["plain"], row["system"]
            print(f"{row['zero_stage']:>4} {world:>5} {1e3 * a['median_s']:>9.1f} ({1e3 * a['p10_s']:.0f}-"
                  f"{1e3 * a['p90_s']:.0f}) {1e3 * b['median_s']:>11.1f} ({1e3 * b['p10_s']:.0f}-"
                  f"{1e3 * b['p90_s']:.0f}) {row['ratio']:>6.3f} {row['cpu_ratio']:>14.3f}", flush=True)
            if row["profile"]:
                print(f"--- profile, ZeRO {row['zero_stage']}, {world} rank(s), {args.profile} system steps ---\n"
                      f"{row['profile']}", flush=True)
    rows = [r for rec in records for r in rec["rows"]]
    ratios = {f"zero{s}": max(r["ratio"] for r in rows if r["zero_stage"] == s) for s in args.stages}
    cpu_ratios = {f"zero{s}": max(r["cpu_ratio"] for r in rows if r["zero_stage"] == s) for s in args.stages}
    load_after = os.getloadavg()
    print("worst ratio over rank counts: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()) +
          "; by CPU time: " + ", ".join(f"{k} {v:.3f}" for k, v in cpu_ratios.items()))
    print(f"peak resident memory per rank: " + "; ".join(
        f"{rec['rows'][0]['ranks']} rank(s): {', '.join(f'{g:.2f}' for g in rec['peak_rss_gib_per_rank'])} GiB"
        for rec in records if rec["rows"]) + " (plain and system models together, frozen weights shared)")
    memory = next((rec["gpu_memory_prediction"] for rec in records if rec.get("gpu_memory_prediction")), None)
    if memory:
        print(f"activations: {memory['activation_bytes_per_token'] / 2**10:.1f} KiB per token (bf16 autocast, "
              f"measured at {memory['measured'][0]['tokens']} and {memory['measured'][1]['tokens']} tokens); the real "
              f"paper configuration ({memory['tokens_per_clip']} tokens per clip) predicts a peak of "
              f"{memory['predicted_peak_gib_8_clips']:.1f} GiB at 8 clips and {memory['predicted_peak_gib_16_clips']:.1f} "
              f"GiB at 16 clips per GPU step (weights and AdamW state {memory['static_gib']:.2f} GiB)", flush=True)
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} on {os.cpu_count()} cores; "
          f"{time.time() - started:.0f} s", flush=True)
    if args.json:
        from avpea_dist.fileio import atomic_write_json

        for rec in records:
            for row in rec["rows"]:
                row.pop("profile", None) if not args.profile else None
        atomic_write_json(Path(args.json), {
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "host": platform.node(),
                        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
                        "loadavg_before": list(load_before), "loadavg_after": list(load_after)},
            "torch": torch.__version__, "deepspeed": __import__("deepspeed").__version__,
            "config": args.config, "tiny": args.tiny, "overrides": SMALL + (TINY if args.tiny else []) + args.overrides,
            "steps_per_round": args.steps, "rounds": args.rounds, "seconds": round(time.time() - started, 1),
            "ratios": ratios, "cpu_time_ratios": cpu_ratios, "rows": rows, "gpu_memory_prediction": memory,
            "peak_rss_gib_per_rank": {str(rec["rows"][0]["ranks"]): rec["peak_rss_gib_per_rank"]
                                      for rec in records if rec["rows"]}})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
