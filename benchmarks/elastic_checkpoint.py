"""What the consolidated trainable state costs at the paper configuration (issue 24), on this machine.

    python benchmarks/elastic_checkpoint.py [--json PATH]

One process (gloo, 1 rank) builds configs/avel_vitl.yaml's structure (ViT-L/16, random-init backbone, small
inputs: the trainable state does not depend on them), takes one AdamW step on random gradients so the
moments exist, and times, at ZeRO 1 (the partitioned path), then at ZeRO 0:
  save_total         the whole checkpoint save (DeepSpeed's files + trainable.safetensors + rank files)
  consolidate        gathering the trainable state by name and serializing it (part of save_total)
  load_same          a resume at the same world size and stage (DeepSpeed's own files)
  load_other         (ZeRO 0) the ZeRO 1 checkpoint loaded into a fresh ZeRO 0 engine: the consolidated
                     file re-partitioned
and the size of trainable.safetensors beside DeepSpeed's files. Wall-clock seconds, median of --reps; the
machine's load average is printed with them. One rank: the gather's all-reduces move nothing here (on W ranks
each rank sends its partition once per tensor).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RANK", "0")
os.environ.setdefault("WORLD_SIZE", "1")
os.environ.setdefault("LOCAL_RANK", "0")
os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
os.environ.setdefault("MASTER_PORT", "29577")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from avpea_dist.config_load import load_config  # noqa: E402
from avpea_dist.models.model import build_model  # noqa: E402
from avpea_dist.runtime import world as avdist  # noqa: E402
from avpea_dist.tasks.registry import build_task  # noqa: E402
from avpea_dist.train.checkpoint import install_checkpoint_engine, load_checkpoint, save_checkpoint  # noqa: E402
from avpea_dist.train.elastic import CONSOLIDATED, consolidated_bytes  # noqa: E402
from avpea_dist.train.engine import build_engine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SMALL = ["model.pretrained=none", "model.img_size=32", "model.mel_bins=32", "model.audio_frames=32",
         "model.num_segments=2", "data.batch_size=1", "train.progress=false"]


def engine_at(stage: int):
    cfg = load_config(str(REPO / "configs" / "avel_vitl.yaml"), SMALL + [f"dist.zero_stage={stage}"])
    torch.manual_seed(0)
    model = build_model(cfg.model, task=build_task(cfg, None))
    engine, _ = build_engine(model, cfg)
    install_checkpoint_engine(engine)
    return engine


def one_step(engine) -> None:
    """Random gradients and one optimizer step: AdamW's moments exist, as in any saved run."""
    g = torch.Generator().manual_seed(1)
    loss = sum((p * torch.randn(p.shape, generator=g)).sum() * 1e-3
               for p in engine.module.parameters() if p.requires_grad)
    engine.backward(loss)
    engine.step()


def timed(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    avdist.init_process_group(avdist.world_info_from_env(), "gloo", 600)
    torch.set_num_threads(1)
    out = {"load_average": os.getloadavg(), "cpus": os.cpu_count(), "torch_threads": 1}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "checkpoints"
        previous = None
        for stage in (1, 0):
            eng = engine_at(stage)
            r = {}
            if previous is not None:  # the other stage's checkpoint, re-partitioned into this engine
                r["load_other_s"] = timed(lambda: load_checkpoint(eng, previous), args.reps)
            one_step(eng)
            out["trainable_parameters"] = sum(p.numel() for p in eng.module.parameters() if p.requires_grad)
            step = 10 + stage
            r["consolidate_s"] = timed(lambda: consolidated_bytes(eng), args.reps)
            r["save_total_s"] = timed(lambda: save_checkpoint(eng, root, step, {"step": step}, keep=10), args.reps)
            previous = root / f"step_{step:08d}"
            r["files_mb"] = {p.name: round(p.stat().st_size / 2**20, 1) for p in sorted(previous.iterdir())}
            r["load_same_s"] = timed(lambda: load_checkpoint(eng, previous), args.reps)
            out[f"zero{stage}"] = r
            print(json.dumps({f"zero{stage}": r}), flush=True)
            del eng
    out["load_average_after"] = os.getloadavg()
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    avdist.teardown()


if __name__ == "__main__":
    main()
