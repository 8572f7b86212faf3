"""The training stream over one epoch, per rank x worker layout: bytes read per sample delivered, coverage,
and classes per batch.

Writes a training split of 3,339 samples (AVE's training set size) whose members have the shard format's
names and sizes (ten ``--frame-kb`` JPEG-sized frames, a float16 (10, 128, 102) fbank, a json), then, per
layout (global batch = ranks x ``--batch``), reads every rank's and every worker's micro-batches of the
default epoch in this process, exactly as their ``TrainStream`` does (each worker starting with an empty
header cache, as a worker process would), and counts the bytes the file reader took from disk
(``tario.bytes_read``: member data, tar headers, and for a folder without a reader index the header walks
that locate samples). Decoding is left out: it reads no shard bytes. The same pass gives the distinct samples
of the epoch and the classes per micro-batch (``--batch`` clips) under two labelings of the samples: 28 classes in shard order
(shards cut from class-grouped records, as old builds were) and the same classes after a seeded shuffle (as
``shards build`` now cuts them), beside random sampling's exact expectation. Records go to
``benchmarks/results/stream_bytes.json``.

    python benchmarks/stream_bytes.py [--both]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from build_throughput import RESULTS, machine

LAYOUTS = ((1, 1), (8, 6), (64, 6))
CLASSES = 28  # AVE's event classes


def labelings(samples: int) -> dict[str, list[int]]:
    import random

    grouped = [i * CLASSES // samples for i in range(samples)]
    return {"class_grouped_shards": grouped, "shuffled_shards": random.Random(0).sample(grouped, samples)}


def random_sampling(classes: list[int], batch: int) -> float:
    """Mean distinct classes in a batch drawn at random without replacement (exact)."""
    from math import comb

    n = len(classes)
    return sum(1 - comb(n - classes.count(c), batch) / comb(n, batch) for c in set(classes))


def write_split(root: Path, samples: int, shard_size: int, frame_kb: float) -> int:
    """A manifest and shards of ``samples`` stand-in samples; returns the split's bytes on disk."""
    import numpy as np

    from avpea_dist.datasets.ave.release import BACKGROUND
    from avpea_dist.data.tario import TarShardWriter
    from avpea_dist.fileio import sha256_file

    rng = np.random.default_rng(0)
    fbank = bytes(128) + rng.bytes(10 * 128 * 102 * 2)  # the npy header is 128 bytes
    shards = []
    for n, lo in enumerate(range(0, samples, shard_size)):
        name = f"train-{n:06d}.tar"
        count = min(shard_size, samples - lo)
        with open(root / name, "wb") as f:
            w = TarShardWriter(f)
            for i in range(lo, lo + count):
                frames = {f"f{j}.jpg": rng.bytes(int(frame_kb * 1000 * rng.uniform(0.8, 1.2))) for j in range(10)}
                w.write(f"k{i:05d}", {**frames, "fbank.npy": fbank, "json": json.dumps({"id": i}).encode()})
            w.close()
        shards.append({"file": name, "sha256": sha256_file(root / name), "bytes": (root / name).stat().st_size,
                       "samples": count})
    manifest = {"format": "avpea-shards", "version": 1, "complete": True, "source": "benchmark",
                "classes": ["event", BACKGROUND], "preprocessing": {"frame_size": 224},
                "splits": {"train": {"samples": samples, "shards": shards, "skipped": []}}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return sum(s["bytes"] for s in shards)


def add_index(root: Path) -> None:
    """The readers' index a finished build writes (offsets from the tar headers, outside the count)."""
    from avpea_dist.data.index import INDEX, write_split_indexes
    from avpea_dist.fileio import atomic_write_json

    body = write_split_indexes(root, json.loads((root / "manifest.json").read_text()), {})
    atomic_write_json(root / INDEX, body)


def measure(root: Path, ranks: int, workers: int, batch: int, buffer: int) -> dict:
    """One epoch of every rank's and worker's reads at global batch ``ranks * batch``: each worker starts with
    an empty header cache, as a worker process does, and each rank's stream walks its shards' headers once
    (without a reader index) as a rank's process does."""
    from avpea_dist.data import train_stream
    from avpea_dist.data.epoch_plan import epoch_global_batches
    from avpea_dist.data.manifest import read_manifest
    from avpea_dist.data.tario import bytes_read
    from avpea_dist.data.train_stream import TrainStream
    from avpea_dist.tasks.avel.codec import AVELCodec

    samples = read_manifest(root)["splits"]["train"]["samples"]
    g = ranks * batch
    epoch_batches = epoch_global_batches(samples, g)
    t, before, keys = time.perf_counter(), bytes_read(), []
    batches: list[list[int]] = []
    for r in range(ranks):
        train_stream._OFFSETS.clear()  # a new rank process
        ts = TrainStream(root, codec=AVELCodec(2), batch_size=batch, img_size=224, shuffle_buffer=buffer, seed=0,
                         rank=r, world_size=ranks, epoch=0, epoch_batches=epoch_batches, global_batch=g)
        for v in range(workers):
            train_stream._OFFSETS.clear()  # a new worker process: only what the rank handed over
            for j in ts.worker_micro_batches(v, workers):
                _, _, numbers = ts.micro_samples(j)
                raws, _ = ts.read_samples(numbers)
                got = [int(x.key[1:]) for x in raws if x is not None]
                keys += got
                batches.append(got)
    read = bytes_read() - before
    row = {"ranks": ranks, "workers": workers, "batch_size": batch, "global_batch": g,
           "epoch_global_batches": epoch_batches, "indexed": not ts.offsets,
           "samples_delivered": len(keys), "bytes_read": read, "seconds": round(time.perf_counter() - t, 2),
           "distinct_fraction": round(len(set(keys)) / samples, 4),
           "distinct_fraction_floor": round(1 - g / samples, 4)}
    for name, classes in labelings(samples).items():
        row[f"classes_per_batch_{name}"] = round(sum(len({classes[k] for k in b}) for b in batches) / len(batches),
                                                 3)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=3339)
    ap.add_argument("--shard-size", type=int, default=336)
    ap.add_argument("--frame-kb", type=float, default=6.0, help="mean size of a stand-in JPEG frame")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--shuffle-buffer", type=int, default=500)
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    ap.add_argument("--both", action="store_true", help="also measure the folder without its reader index (as "
                    "built before the index existed: header walks locate the samples)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        root = Path(tmp)
        total = write_split(root, args.samples, args.shard_size, args.frame_kb)
        per_sample = total / args.samples
        rows = []
        for indexed in (True, False) if args.both else (True,):
            if indexed:
                add_index(root)
            else:
                for path in (root / "index.json", root / "index" / "train.npz"):
                    path.unlink()
            for ranks, workers in LAYOUTS:
                row = measure(root, ranks, workers, args.batch, args.shuffle_buffer)
                assert row["indexed"] == indexed
                row["bytes_per_sample_delivered"] = round(row["bytes_read"] / row["samples_delivered"] / per_sample,
                                                          4)
                rows.append(row)
                print(json.dumps(row), flush=True)
    record = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
              "split": f"{args.samples} samples in shards of {args.shard_size}, {per_sample / 1e3:.0f} kB per sample "
                       f"on disk (ten ~{args.frame_kb:g} kB frames + float16 fbank + json)",
              "measure": "bytes read from shard files / (samples delivered x mean bytes per sample on disk); "
                         "1.0 = each delivered sample's bytes read once; goal <= 1.5",
              "classes_per_batch_random_sampling": round(random_sampling(labelings(args.samples)["shuffled_shards"],
                                                                         args.batch), 3),
              "shuffle_buffer": args.shuffle_buffer,
              "order": "elastic: global batch = ranks x batch, the epoch's order a function of (seed, epoch) only",
              "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    from avpea_dist.fileio import atomic_write_json

    atomic_write_json(RESULTS / "stream_bytes.json", record)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
