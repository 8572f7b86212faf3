"""Bytes read from shard files per training sample delivered, for rank x worker layouts over one epoch.

Writes a training split of 3,339 samples (AVE's training set size) whose members have the shard format's
names and sizes (ten ``--frame-kb`` JPEG-sized frames, a float16 (10, 128, 102) fbank, a json), then, per
layout, runs every rank's and every worker's stream of the default epoch in this process and counts the
bytes its file reader took from disk (``tario.bytes_read``: member data, tar headers, the header walks that
locate mid-shard starts). Decoding is left out: it reads no shard bytes. Records go to
``benchmarks/results/stream_bytes.json``.

    python benchmarks/stream_bytes.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from build_throughput import RESULTS, machine

LAYOUTS = ((1, 1), (8, 6), (64, 6))


def write_split(root: Path, samples: int, shard_size: int, frame_kb: float) -> int:
    """A manifest and shards of ``samples`` stand-in samples; returns the split's bytes on disk."""
    import numpy as np

    from avpea_dist.data.ave import BACKGROUND
    from avpea_dist.data.tario import TarShardWriter
    from avpea_dist.io import sha256_file

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


def measure(root: Path, ranks: int, workers: int, batch: int, buffer: int) -> dict:
    from avpea_dist.data.manifest import default_epoch_batches, read_manifest
    from avpea_dist.data.tario import PieceEnd, bytes_read
    from avpea_dist.data.train_stream import TrainStream

    epoch_batches = default_epoch_batches(read_manifest(root), "train", batch, ranks)
    t, before, delivered = time.perf_counter(), bytes_read(), 0
    for r in range(ranks):
        ts = TrainStream(root, batch_size=batch, img_size=224, shuffle_buffer=buffer, seed=0, rank=r,
                         world_size=ranks, epoch=0, epoch_batches=epoch_batches, workers=workers)
        for v in range(workers):
            delivered += sum(1 for x in ts.raw_pipeline(v) if not isinstance(x, PieceEnd))
    read = bytes_read() - before
    return {"ranks": ranks, "workers": workers, "batch_size": batch, "epoch_batches": epoch_batches,
            "samples_delivered": delivered, "bytes_read": read, "seconds": round(time.perf_counter() - t, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=3339)
    ap.add_argument("--shard-size", type=int, default=336)
    ap.add_argument("--frame-kb", type=float, default=6.0, help="mean size of a stand-in JPEG frame")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--shuffle-buffer", type=int, default=500)
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        root = Path(tmp)
        total = write_split(root, args.samples, args.shard_size, args.frame_kb)
        per_sample = total / args.samples
        rows = []
        for ranks, workers in LAYOUTS:
            row = measure(root, ranks, workers, args.batch, args.shuffle_buffer)
            row["bytes_per_sample_delivered"] = round(row["bytes_read"] / row["samples_delivered"] / per_sample, 4)
            rows.append(row)
            print(json.dumps(row))
    record = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
              "split": f"{args.samples} samples in shards of {args.shard_size}, {per_sample / 1e3:.0f} kB per sample "
                       f"on disk (ten ~{args.frame_kb:g} kB frames + float16 fbank + json)",
              "measure": "bytes read from shard files / (samples delivered x mean bytes per sample on disk); "
                         "1.0 = each delivered sample's bytes read once; goal <= 1.5",
              "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    from avpea_dist.io import atomic_write_json

    atomic_write_json(RESULTS / "stream_bytes.json", record)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
