"""Loader throughput: decoded clips/s per worker, tensors ready for the model (frames uint8, audio float32).

Builds shards from synthetic clips (frames stored 224x224 JPEG q90, fbank float16), then times (a)
``decode_sample`` serially in this process at img_size 224 and 96 -- one worker's work -- and (b)
``make_train_loader`` with 1 and 2 worker processes at img_size 224, after the first batch (start-up
excluded). Records go to ``benchmarks/results/data_loader.json`` and the ``## Data`` section of
``benchmarks/RESULTS.md``.

    python benchmarks/loader_throughput.py --clips 64
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from build_throughput import RESULTS, machine, update_results_md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--batches", type=int, default=24, help="timed batches of 8 clips per loader run")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    args = ap.parse_args()

    import torch

    from avpea_dist.data.build import BuildOptions
    from avpea_dist.datasets.ave.build import build_ave
    from avpea_dist.data.manifest import read_manifest
    from avpea_dist.data.loaders import make_train_loader
    from avpea_dist.data.stream import decode_sample
    from avpea_dist.tasks.avel.codec import AVELCodec
    from avpea_dist.datasets.ave.synth import make_dataset
    from avpea_dist.data.tario import iter_raw_samples

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        make_dataset(Path(tmp) / "ave", args.clips, seed=0)
        shards = Path(tmp) / "shards"
        build_ave(Path(tmp) / "ave", shards, BuildOptions(workers=2, shard_size=16), progress=False)
        m = read_manifest(shards)
        kb = sum(sh["bytes"] for s in m["splits"].values() for sh in s["shards"]) / args.clips / 1e3
        raws = [r for sh in m["splits"]["train"]["shards"] for r in iter_raw_samples(shards / sh["file"])]
        codec = AVELCodec(len(m["classes"]))
        for size in (224, 96):
            decode_sample(raws[0], codec=codec, frame_size=224, img_size=size)
            t = time.perf_counter()
            for _ in range(3):
                for r in raws:
                    decode_sample(r, codec=codec, frame_size=224, img_size=size)
            rate = 3 * len(raws) / (time.perf_counter() - t)
            rows.append((f"`decode_sample` serially, img_size {size} (one worker's work)",
                         {"clips_per_s": rate, "per_worker": rate}))
        for w in args.workers:
            loader = make_train_loader(shards, codec=codec, batch_size=8, img_size=224, num_workers=w,
                                       shuffle_buffer=64, seed=0, rank=0, world_size=1, epoch=0,
                                       epoch_batches=args.batches + w)
            it = iter(loader)
            for _ in range(w):  # start-up: every worker delivers its first batch
                next(it)
            t = time.perf_counter()
            n = sum(len(b["key"]) for b in it)
            rate = n / (time.perf_counter() - t)
            rows.append((f"`make_train_loader`, {w} worker(s), img_size 224, batch 8",
                         {"clips_per_s": rate, "per_worker": rate / w}))
    record = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
              "shards": f"{args.clips} synthetic clips, {kb:.0f} kB per clip (10 JPEG q90 224x224 + float16 fbank)",
              "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    from avpea_dist.fileio import atomic_write_json

    atomic_write_json(RESULTS / "data_loader.json", record)
    update_results_md()
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
