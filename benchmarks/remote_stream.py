"""Remote shard streaming: clips/s of one loader worker and bytes fetched per delivered clip, from the local folder,
from moto's S3 server over loopback and from a Range-honouring HTTP server over loopback, in one run, at the
demo's 64 px and at 224 px (shards built at that frame size, decoded at that size).

Each source is read by the training loader (``make_train_loader``, 1 worker, world size 1) for whole epochs
of the train split, timed after its first batch. Bytes fetched are counted on the wire by a pass-through proxy
(``tests/remote/servers.py``) in front of each server: shard bytes, read-ahead, HTTP/XML headers and listings
included. ``bytes_ratio`` = bytes fetched per delivered clip / the clip's share of the shards' bytes.

The servers run in a process of their own (``--serve``), as a store is not inside its client; they still
share the machine's cores with the loader, so on a 2-core machine their CPU time (``server_cpu_ms_per_clip``)
is part of the remote figure. Rates are measured straight against the servers; the bytes in one more pass per
remote source, in a process of its own (``--count``), through the counting proxies (a relay in Python costs
the servers' process 1-3 ms of CPU per request, which is the proxy's, not the stream's).

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


def cpu_s() -> float:
    """CPU seconds of this process and its finished children (the loader's workers, once joined)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


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


def serve(www: str) -> None:
    """Child: moto, the HTTP server and a counting proxy before each; prints their ports, then answers each
    line on stdin with the bytes each proxy relayed so far, until stdin closes."""
    server, port = moto_server()
    http = RangeServer(Path(www))
    s3_proxy, http_proxy = FaultProxy(port), FaultProxy(http.port)
    print(json.dumps({"s3": port, "http": http.port, "s3_proxy": s3_proxy.port, "http_proxy": http_proxy.port}),
          flush=True)
    for _ in sys.stdin:
        print(json.dumps({"s3": s3_proxy.bytes_down, "http": http_proxy.bytes_down}), flush=True)
    s3_proxy.stop(), http_proxy.stop(), http.stop(), server.stop()


class Servers:
    """The ``--serve`` child, seen from the benchmark."""

    def __init__(self, www: Path) -> None:
        import subprocess

        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(www), "--json", "-"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        self.ports = json.loads(self.proc.stdout.readline())

    def bytes_down(self) -> dict[str, int]:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the servers' process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except Exception:  # noqa: BLE001 - a child that does not leave is killed
            self.proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=128, help="synthetic clips per shard set")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each source per size (the median is kept)")
    ap.add_argument("--json", required=True, help="where to write the figures")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--count", nargs=2, metavar=("URL", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve(args.serve)
    if args.count:
        print(json.dumps({"clips": rate(args.count[0], int(args.count[1]), args.epochs)[1]}))
        return None

    import boto3

    from avpea_dist import storage
    from avpea_dist.data.manifest import read_manifest
    from avpea_dist.data.remote import upload

    start_machine = machine()
    www = Path(tempfile.mkdtemp(prefix="www-", dir=args.work))
    servers = Servers(www)
    port = servers.ports["s3"]
    os.environ.update(s3_env(port))
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="bench")
    direct, counted = (f"http://127.0.0.1:{servers.ports[k]}" for k in ("s3", "s3_proxy"))
    http_url, http_counted = (f"http://127.0.0.1:{servers.ports[k]}" for k in ("http", "http_proxy"))
    # before any worker process starts: forkserver workers keep the environment the server started with
    os.environ["AWS_ENDPOINT_URL"] = direct
    storage.configure()

    def count(name: str, url: str, size: int) -> tuple[int, int]:
        """-> (bytes on the wire, clips delivered) of the same epochs read through the counting proxy."""
        import subprocess

        env = {**os.environ, "AWS_ENDPOINT_URL": counted}
        before = servers.bytes_down()[name]
        out = subprocess.run([sys.executable, __file__, "--count", url, str(size), "--epochs", str(args.epochs),
                              "--json", "-"], env=env, capture_output=True, text=True, check=True)
        return servers.bytes_down()[name] - before, json.loads(out.stdout.strip().splitlines()[-1])["clips"]

    result: dict = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": start_machine,
                    "clips": args.clips, "epochs": args.epochs,
                    "repeats": args.repeats, "sizes": {}}
    try:
        with tempfile.TemporaryDirectory(dir=args.work) as tmp:
            for size in (64, 224):
                local = build(Path(tmp), args.clips, size)
                m = read_manifest(local)
                train = m["splits"]["train"]
                clip_bytes = sum(sh["bytes"] for sh in train["shards"]) / train["samples"]
                upload(local, f"s3://bench/shards{size}")
                shutil.copytree(local, www / f"shards{size}")
                row: dict = {"clip_bytes": round(clip_bytes)}
                runs: dict[str, list[dict]] = {"local": [], "s3": [], "http": []}
                wire: dict[str, dict] = {}
                for rep in range(args.repeats):  # interleaved, so a burst of load hits every source alike
                    for name, url in (("local", str(local)), ("s3", f"s3://bench/shards{size}"),
                                      ("http", f"{http_url}/shards{size}")):
                        server0 = servers.cpu_s()
                        clips_per_s, clips = rate(url, size, args.epochs)
                        runs[name].append({"clips_per_s": round(clips_per_s, 2), "clips": clips,
                                           "server_cpu_ms_per_clip": round((servers.cpu_s() - server0) / clips
                                                                           * 1e3, 2)})
                        print(f"{size:>3} px {name:<5} {clips_per_s:7.1f} clips/s per worker, servers' CPU "
                              f"{runs[name][-1]['server_cpu_ms_per_clip']} ms per clip", flush=True)
                for name, url in (("s3", f"s3://bench/shards{size}"), ("http", f"{http_counted}/shards{size}")):
                    fetched, clips = count(name, url, size)
                    wire[name] = {"bytes_per_sample": round(fetched / clips),
                                  "bytes_ratio": round(fetched / clips / clip_bytes, 3)}
                    print(f"{size:>3} px {name:<5} {fetched / clips / 1e3:.0f} kB fetched per clip "
                          f"({fetched / clips / clip_bytes:.2f}x)", flush=True)
                for name, rs in runs.items():
                    mid = sorted(rs, key=lambda r: r["clips_per_s"])[len(rs) // 2]  # the median run
                    row[name] = {**mid, **wire.get(name, {}), "runs": [r["clips_per_s"] for r in rs]}
                row["ratio_to_local"] = {k: round(row[k]["clips_per_s"] / row["local"]["clips_per_s"], 3)
                                         for k in ("s3", "http")}
                result["sizes"][str(size)] = row
    finally:
        servers.stop()
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
