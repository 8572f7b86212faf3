"""Build bookkeeping at 20k and 2M records (issue 25): seconds and peak memory per 1,000 shards, and the
readers' start-up at the larger size.

Each build runs in a fresh process through the real builder (``data.sharding.build_task``: plan, the streamed
fingerprint, video stamps, progress records appended per shard, the manifest and the readers' index) with an
AudioSet-shaped release (``datasets.labelled_clips.ClipsRelease``: 527 classes, 1-3 labels a clip with a
long-tailed frequency, 90/5/5 % train/val/test) whose videos are not on disk and whose decoding is replaced
by a fixed sample: each sample is its json member alone. What is measured is therefore the bookkeeping the
issue names, plus writing the (1 KiB a sample) tars: no video is opened. The reader's start-up is a fresh
process's ``load_index`` of every split, its time and peak RSS. The rank's start-up is what a training rank
does with the data before its first read, end to end, in a fresh process that has imported torch and the
trainer: ``ShardData`` with the shipped ``audioset_vitl.yaml`` (the shards' description, the task built from
it, every split checked), then the epoch's ``TrainStream`` (the train index, the epoch order over 2M samples
with ``data.sampling=balanced`` and this rank's slice, at 64 ranks); its time, and its peak RSS above the RSS
after the imports.

    python benchmarks/build_bookkeeping.py --json benchmarks/results/data_bookkeeping.json
    python benchmarks/build_bookkeeping.py --records 2000 20000 --json /tmp/b.json   # quick

Goal (issue 25): the 2M figures within 1.5x of the 20k ones; start-up <= 1 s and <= 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLASSES = 527
SPLITS = (("train", 0.90), ("val", 0.05), ("test", 0.05))


def label(n: int) -> str:
    """20000 -> '20k', 2000000 -> '2M'."""
    for unit, div in (("M", 10**6), ("k", 10**3)):
        if n >= div and n % (div // 10) == 0:
            return f"{n / div:g}{unit}"
    return str(n)


def machine() -> dict:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = re.search(r"Model name:\s*(.+)", out).group(1).strip()
    except Exception:  # noqa: BLE001 - any failure: say unknown
        cpu = platform.processor() or "unknown CPU"
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(pages / 2**30, 1),
            "python": platform.python_version(), "load_average_1m_start": round(os.getloadavg()[0], 2)}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---------------------------------------------------------------------------------------------
# Child: one build


def _annotations(path: Path, n: int, seed: int = 0) -> list[tuple[str, tuple[int, ...]]]:
    """AudioSet-like rows (YouTube-shaped ids, 1-3 labels drawn from a long-tailed class frequency), written
    as a segments csv (what the fingerprint streams) -> [(id, class indices)]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    freq = 1.0 / np.arange(1, CLASSES + 1) ** 1.1
    freq /= freq.sum()
    k = rng.integers(1, 4, size=n)
    flat = rng.choice(CLASSES, size=int(k.sum()), p=freq)
    rows, at = [], 0
    with open(path, "w") as f:
        f.write("# YTID, start_seconds, end_seconds, positive_labels\n")
        for i in range(n):
            labels = tuple(sorted(set(flat[at:at + k[i]].tolist())))
            at += k[i]
            vid = f"{i:011d}"
            rows.append((vid, labels))
            f.write(f'{vid}, 30.000, 40.000, "{",".join(f"/m/{c:05d}" for c in labels)}"\n')
    return rows


def _release(csv: Path, rows: list[tuple[str, tuple[int, ...]]]):
    """A ``ClipsRelease`` as ``ClipsBuilder.release`` makes one, without scanning a video folder (2M files):
    every segment's video is named but absent, which the stamps record as such."""
    from avpea_dist.data.sharding import Release
    from avpea_dist.datasets.labelled_clips import Clip, ClipsRelease, Rows

    classes = [f"/m/{c:05d}" for c in range(CLASSES)]
    clips: dict[str, list] = {}
    start = 0
    for split, share in SPLITS:
        n = round(share * len(rows)) if split != SPLITS[-1][0] else len(rows) - start
        clips[split] = [Clip(split, j, vid, 30.0, 40.0, tuple(classes[c] for c in labels), f"/nonexistent/{vid}.mp4")
                        for j, (vid, labels) in enumerate(rows[start:start + n])]
        start += n
    rel = ClipsRelease.__new__(ClipsRelease)
    Release.__init__(rel, clips, str(csv))
    rel.rows = Rows(classes, classes, True, {}, {"files": [csv.name]})
    rel.dataset, rel.annotation_files = "audioset", (csv,)
    rel.entries = {split: {"rows": len(c), "skipped": [], "missing_videos": 0} for split, c in clips.items()}
    rel.index = {c: i for i, c in enumerate(classes)}
    rel.validation = {"from": "train", "fraction": 0.05, "seed": 0, "rule": "benchmark split", "videos": 0}
    rel.full_videos, rel.pattern = False, "{id}.mp4"
    return rel


def child_build(work: Path, n: int, shard_size: int) -> dict:
    from avpea_dist.data import sharding, tario  # noqa: F401 - imported before the clock (webdataset, torch)
    from avpea_dist.data.builder import BuildOptions

    def fixed(paths, opts):  # decoding replaced: the same tiny sample for every video
        for _ in paths:
            yield "ok", {}

    sharding.ordered_results = fixed
    csv = work / "segments.csv"
    rows = _annotations(csv, n)
    base_mb = _peak_mb()
    t0 = time.perf_counter()
    release = _release(csv, rows)
    del rows
    result = sharding.build_task(work / "shards", release, BuildOptions(shard_size=shard_size, min_seconds=1.0,
                                                                        sampling="even"), progress=False)
    seconds = time.perf_counter() - t0
    m = result["manifest"]
    shards = sum(len(s["shards"]) for s in m["splits"].values())
    disk = {p.name: p.stat().st_size for p in (work / "shards").iterdir() if p.is_file() and p.suffix != ".tar"}
    return {"records": n, "shards": shards, "seconds": round(seconds, 3), "peak_rss_mb": round(_peak_mb(), 1),
            "rss_before_build_mb": round(base_mb, 1), "manifest_mb": round(disk["manifest.json"] / 1e6, 2),
            "index_mb": round(sum(p.stat().st_size for p in (work / "shards" / "index").iterdir()) / 1e6, 2),
            "progress_file_mb": round(sum(p.stat().st_size for p in (work / "shards" / "parts").iterdir()) / 1e6, 2)}


def child_read(root: Path) -> dict:
    t0 = time.perf_counter()
    from avpea_dist.data.index import load_index

    t1 = time.perf_counter()
    splits = json.loads((root / "index.json").read_text())["splits"]
    loaded = {s: load_index(root, s) for s in splits}
    t2 = time.perf_counter()
    assert load_index(root, "train") is loaded["train"]  # once per process
    return {"import_s": round(t1 - t0, 3), "load_index_s": round(t2 - t1, 3), "peak_rss_mb": round(_peak_mb(), 1),
            "samples": sum(i.samples for i in loaded.values()), "labels": loaded["train"].labels is not None}


def child_rank(root: Path, world: int) -> dict:
    t0 = time.perf_counter()
    import torch  # noqa: F401 - a rank has it loaded before its data

    from avpea_dist.config_load import load_config
    from avpea_dist.data.train_stream import TrainStream
    from avpea_dist.presets import find_config
    from avpea_dist.train.data_source import ShardData

    base_mb = _peak_mb()
    t1 = time.perf_counter()
    cfg = load_config(find_config("audioset_vitl"), [f"data.shards={root}", "data.sampling=balanced",
                                                     "data.epoch_samples=200000"])
    data = ShardData(cfg, rank=world - 1, world_size=world)
    t2 = time.perf_counter()
    stream = TrainStream(root, batch_size=data.micro_batch, img_size=cfg.model.img_size,
                         shuffle_buffer=cfg.data.shuffle_buffer, seed=cfg.train.seed, rank=world - 1,
                         world_size=world, epoch=0, epoch_batches=data.epoch_batches, global_batch=data.global_batch,
                         codec=data.task.codec("train", 0), sampling=cfg.data.sampling)
    t3 = time.perf_counter()
    return {"world_size": world, "import_s": round(t1 - t0, 3), "shard_data_s": round(t2 - t1, 3),
            "train_stream_s": round(t3 - t2, 3), "startup_s": round(t3 - t1, 3),
            "rss_after_imports_mb": round(base_mb, 1), "peak_rss_mb": round(_peak_mb(), 1),
            "startup_mb": round(_peak_mb() - base_mb, 1), "micro_batches": len(stream),
            "description_kb": round(len(json.dumps(data.manifest)) / 1e3, 1)}


# ---------------------------------------------------------------------------------------------
# Parent


def _run(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, cwd=REPO)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="where the record goes (required)")
    p.add_argument("--records", type=int, nargs=2, default=[20_000, 2_000_000], metavar=("SMALL", "LARGE"))
    p.add_argument("--shard-size", type=int, default=128)
    p.add_argument("--workdir", help="scratch folder (default: a temporary one, removed after)")
    p.add_argument("--child-build", nargs=3, metavar=("WORK", "N", "SHARD_SIZE"), help=argparse.SUPPRESS)
    p.add_argument("--child-read", metavar="ROOT", help=argparse.SUPPRESS)
    p.add_argument("--child-rank", metavar="ROOT", help=argparse.SUPPRESS)
    p.add_argument("--reuse", action="store_true",
                   help="with --workdir: keep builds already there (only the readers' start-up is measured again)")
    if any(a in sys.argv for a in ("--child-build", "--child-read", "--child-rank")):
        a, _ = p.parse_known_args()
        out = (child_build(Path(a.child_build[0]), int(a.child_build[1]), int(a.child_build[2])) if a.child_build
               else child_read(Path(a.child_read)) if a.child_read else child_rank(Path(a.child_rank), 64))
        print(json.dumps(out))
        return 0
    a = p.parse_args()
    if not a.json:
        p.error("--json PATH is required")
    info = machine()
    scratch = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="bookkeeping-"))
    record: dict = {"benchmark": "build_bookkeeping", "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "machine": info, "shard_size": a.shard_size, "builds": {}}
    try:
        for n in a.records:
            work = scratch / label(n)
            done = work / "build.json"
            if a.reuse and a.workdir and done.is_file():
                record["builds"][label(n)] = json.loads(done.read_text())
                continue
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            record["builds"][label(n)] = b = _run(["--child-build", str(work), str(n), str(a.shard_size)])
            b["seconds_per_1000_shards"] = round(b["seconds"] / (b["shards"] / 1000), 3)
            b["peak_mb_per_1000_shards"] = round(b["peak_rss_mb"] / (b["shards"] / 1000), 1)
            b["build_mb_per_1000_shards"] = round((b["peak_rss_mb"] - b["rss_before_build_mb"]) / (b["shards"] / 1000), 1)
            b["load_average_1m_after"] = round(os.getloadavg()[0], 2)
            b["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())  # kept by a later --reuse
            done.write_text(json.dumps(b))
            print(f"{label(n)}: {b}", file=sys.stderr, flush=True)
        large = label(a.records[1])
        reader = _run(["--child-read", str(scratch / large / "shards")])
        rank = _run(["--child-rank", str(scratch / large / "shards")])
    finally:
        if not a.workdir:
            shutil.rmtree(scratch, ignore_errors=True)
    small = label(a.records[0])
    builds = record["builds"]
    record["seconds_per_1000_shards"] = {k: v["seconds_per_1000_shards"] for k, v in builds.items()}
    record["peak_mb"] = {k: v["peak_mb_per_1000_shards"] for k, v in builds.items()}
    record["build_mb_per_1000_shards"] = {k: v["build_mb_per_1000_shards"] for k, v in builds.items()}
    record["reader"] = reader
    record["reader_startup_s"] = reader["load_index_s"]
    record["reader_startup_mb"] = reader["peak_rss_mb"]
    record["rank"] = rank
    record["rank_startup_s"] = rank["startup_s"]
    record["rank_startup_mb"] = rank["startup_mb"]
    ratio = (lambda key: round(record[key][large] / record[key][small], 3))
    record["goal"] = {"seconds_ratio": ratio("seconds_per_1000_shards"), "peak_mb_ratio": ratio("peak_mb"),
                      "build_mb_ratio": ratio("build_mb_per_1000_shards"),
                      "met": ratio("seconds_per_1000_shards") <= 1.5 and ratio("peak_mb") <= 1.5
                      and reader["load_index_s"] <= 1.0 and reader["peak_rss_mb"] <= 200
                      and rank["startup_s"] <= 1.0 and rank["startup_mb"] <= 200}
    record["definitions"] = {
        "peak_mb": "the build process's peak RSS (MB) per 1,000 shards written",
        "build_mb_per_1000_shards": "peak RSS minus the RSS before the build started (imports, annotations "
                                    "generated), per 1,000 shards: what the bookkeeping itself holds",
        "reader_startup_s": f"load_index of every split at {large} records in a fresh process (imports excluded: "
                            f"reader.import_s)",
        "reader_startup_mb": "that process's peak RSS (MB), imports included",
        "rank_startup_s": f"a training rank's data start-up at {large} records (rank 63 of 64, audioset_vitl.yaml with "
                          f"balanced sampling): ShardData + the epoch's TrainStream, imports excluded",
        "rank_startup_mb": "that process's peak RSS above its RSS after importing torch and the trainer (MB)"}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("seconds_per_1000_shards", "peak_mb", "reader_startup_s",
                                             "reader_startup_mb", "rank_startup_s", "rank_startup_mb", "goal")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
