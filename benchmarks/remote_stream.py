"""Remote shard streaming: clips/s of one loader worker and bytes fetched per delivered clip, from the local folder,
from moto's S3 server over loopback and from a Range-honouring HTTP server over loopback, in one run, at the
demo's 64 px and at 224 px (shards built at that frame size, decoded at that size).

Each source is read by the training loader (``make_train_loader``, 1 worker, world size 1) for whole epochs
of the train split, timed after its first batch. Bytes fetched are counted on the wire by a pass-through proxy
(``tests/remote/servers.py``) in front of each server: shard bytes, read-ahead, HTTP/XML headers and listings
included. ``bytes_ratio`` = bytes fetched per delivered clip / the clip's share of the shards' bytes.

    python benchmarks/remote_stream.py --json benchmarks/results/remote_stream.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "remote"))
sys.path.insert(0, str(HERE.parent))  # this tree's avpea_dist, not another installed copy

from servers import FaultProxy, RangeServer, moto_server, s3_env  # noqa: E402


def machine(when: str = "at the start") -> str:
    import platform

    load = os.getloadavg()
    return (f"{platform.node()}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
            f"load {load[0]:.1f}/{load[1]:.1f} (1/5 min) {when}")


def build(root: Path, clips: int, frame_size: int) -> Path:
    from avpea_dist.data.build import BuildOptions
    from avpea_dist.datasets.ave.build import build_ave
    from avpea_dist.datasets.ave.synth import make_dataset

    make_dataset(root / "ave", clips, seed=0)
    out = root / f"shards{frame_size}"
    build_ave(root / "ave", out, BuildOptions(workers=2, shard_size=16, frame_size=frame_size), progress=False)
    return out


def rate(shards: str, size: int, epochs: int) -> tuple[float, int]:
    """-> (clips/s after the first batch, clips delivered in all)."""
    import torch

    from avpea_dist.data.loaders import make_train_loader
    from avpea_dist.data.manifest import default_epoch_batches, read_manifest
    from avpea_dist.tasks.avel.codec import AVELCodec

    torch.set_num_threads(1)
    m = read_manifest(shards)
    codec = AVELCodec(len(m["classes"]))
    per_epoch = default_epoch_batches(m, "train", 4, 1)
    clips, t0, seconds = 0, None, 0.0
    for epoch in range(epochs):
        loader = make_train_loader(shards, codec=codec, batch_size=4, img_size=size, num_workers=1,
                                   shuffle_buffer=16, seed=0, rank=0, world_size=1, epoch=epoch,
                                   epoch_batches=per_epoch)
        it = iter(loader)
        first = next(it)  # start-up (worker fork, first fetch) not timed
        clips += len(first["key"])
        t0 = time.perf_counter()
        for batch in it:
            clips += len(batch["key"])
        seconds += time.perf_counter() - t0
    timed = clips - epochs * 4
    return timed / seconds, clips


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=64, help="synthetic clips per shard set")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--json", required=True, help="where to write the figures")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    args = ap.parse_args()

    import boto3

    from avpea_dist import storage
    from avpea_dist.data.manifest import read_manifest
    from avpea_dist.data.remote import upload

    start_machine = machine()
    server, port = moto_server()
    os.environ.update(s3_env(port))
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="bench")
    www = Path(tempfile.mkdtemp(prefix="www-", dir=args.work))
    http = RangeServer(www)
    s3_proxy, http_proxy = FaultProxy(port), FaultProxy(http.port)
    # before any worker process starts: forkserver workers keep the environment the server started with
    os.environ["AWS_ENDPOINT_URL"] = s3_proxy.url
    storage.configure()
    result: dict = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": start_machine,
                    "clips": args.clips, "epochs": args.epochs, "sizes": {}}
    try:
        with tempfile.TemporaryDirectory(dir=args.work) as tmp:
            for size in (64, 224):
                local = build(Path(tmp), args.clips, size)
                m = read_manifest(local)
                train = m["splits"]["train"]
                clip_bytes = sum(sh["bytes"] for sh in train["shards"]) / train["samples"]
                upload(local, f"s3://bench/shards{size}")
                shutil.copytree(local, www / f"shards{size}")
                row = {"clip_bytes": round(clip_bytes)}
                for name, url, proxy in (("local", str(local), None),
                                         ("s3", f"s3://bench/shards{size}", s3_proxy),
                                         ("http", f"{http_proxy.url}/shards{size}", http_proxy)):
                    before = proxy.bytes_down if proxy else 0
                    clips_per_s, clips = rate(url, size, args.epochs)
                    fetched = (proxy.bytes_down - before) if proxy else None
                    row[name] = {"clips_per_s": round(clips_per_s, 2), "clips": clips,
                                 "bytes_per_sample": round(fetched / clips) if fetched is not None else None,
                                 "bytes_ratio": round(fetched / clips / clip_bytes, 3) if fetched is not None else None}
                    print(f"{size:>3} px {name:<5} {clips_per_s:7.1f} clips/s per worker"
                          + (f", {fetched / clips / 1e3:.0f} kB fetched per clip ({fetched / clips / clip_bytes:.2f}x)"
                             if fetched is not None else f", clip {clip_bytes / 1e3:.0f} kB"), flush=True)
                row["ratio_to_local"] = {k: round(row[k]["clips_per_s"] / row["local"]["clips_per_s"], 3)
                                         for k in ("s3", "http")}
                result["sizes"][str(size)] = row
    finally:
        s3_proxy.stop(), http_proxy.stop(), http.stop(), server.stop()
        shutil.rmtree(www, ignore_errors=True)
    top = result["sizes"]["224"]
    result["ratio_to_local"] = top["ratio_to_local"]
    result["bytes_per_sample"] = {k: top[k]["bytes_per_sample"] for k in ("s3", "http")}
    result["bytes_ratio"] = {k: top[k]["bytes_ratio"] for k in ("s3", "http")}
    result["machine_after"] = machine("at the end")
    from avpea_dist.fileio import atomic_write_json

    atomic_write_json(args.json, result)
    print(json.dumps({k: result[k] for k in ("ratio_to_local", "bytes_per_sample", "bytes_ratio")}))


if __name__ == "__main__":
    main()
