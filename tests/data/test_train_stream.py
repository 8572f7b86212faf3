"""The default training stream samples like an epoch: every sample once across ranks and workers, batches
that mix classes as random sampling does, and a damaged shard reported (named, counted), never silent."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from avpea_dist.data.manifest import read_manifest
from avpea_dist.data.loaders import make_train_loader
from avpea_dist.data.tario import PieceEnd, iter_raw_samples
from avpea_dist.data.train_stream import TrainStream
from avpea_dist.tasks.avel.codec import AVELCodec

from .corrupt import copy_shards
from .fakesplit import expected_classes_per_batch, write_split


def _avel(shards: Path) -> AVELCodec:
    return AVELCodec(len(read_manifest(shards)["classes"]))


def _raw_batches(shards: Path, *, ranks: int, workers: int, batch: int, epoch: int = 0,
                 buffer: int = 100) -> list[list[str]]:
    """Every rank's and worker's batches of keys, read through each worker's real pipeline in this process
    (decoding reads nothing more: batch k is raw items [kB, (k+1)B) of its worker's stream)."""
    n = read_manifest(shards)["splits"]["train"]["samples"]
    e = n // (ranks * batch)
    out = []
    for r in range(ranks):
        ts = TrainStream(shards, codec=_avel(shards), batch_size=batch, img_size=16, shuffle_buffer=buffer, seed=3,
                         rank=r, world_size=ranks, epoch=epoch, epoch_batches=e, workers=workers)
        for v in range(workers):
            keys = [x.key for x in ts.raw_pipeline(v) if not isinstance(x, PieceEnd)]
            assert len(keys) == len(range(v, e, workers)) * batch
            out += [keys[i:i + batch] for i in range(0, len(keys), batch)]
    return out


@pytest.mark.parametrize("ranks,workers", [(1, 1), (1, 3), (2, 1), (2, 4)])
def test_every_sample_once_per_epoch_across_ranks_and_workers(tmp_path: Path, ranks: int, workers: int) -> None:
    n, batch = 101, 4
    write_split(tmp_path / "s", [i % 5 for i in range(n)], shard_size=16)
    leftovers = []
    for epoch in range(3):
        keys = [k for b in _raw_batches(tmp_path / "s", ranks=ranks, workers=workers, batch=batch, epoch=epoch)
                for k in b]
        assert len(keys) == len(set(keys)) >= n * (1 - ranks * batch / n)  # each at most once, all but a few
        assert n - len(keys) < ranks * batch
        leftovers.append(frozenset(f"s{i:05d}" for i in range(n)) - set(keys))
    assert len(set(leftovers)) == 3  # a different few left over each epoch


def test_batches_mix_classes_as_random_sampling_does(tmp_path: Path) -> None:
    """AVE-like: 3,339 training records grouped by class (28 classes), as its annotation files are. Shards
    cut after a seeded shuffle of the records (as ``shards build`` does) give random sampling's mean classes
    per batch within 5% at every layout; shards cut in class order still mix at one stream per rank."""
    n, c, batch = 3339, 28, 8
    grouped = [i * c // n for i in range(n)]
    shuffled = random.Random(0).sample(grouped, n)
    keys_shuffled = write_split(tmp_path / "shuffled", shuffled, shard_size=336)
    keys_grouped = write_split(tmp_path / "grouped", grouped, shard_size=336)
    want = expected_classes_per_batch(grouped, batch)  # 7.07
    for ranks, workers in ((1, 1), (2, 3), (8, 6)):
        batches = _raw_batches(tmp_path / "shuffled", ranks=ranks, workers=workers, batch=batch)
        got = sum(len({keys_shuffled[k] for k in b}) for b in batches) / len(batches)
        assert abs(got - want) <= 0.05 * want, (ranks, workers, got, want)
    batches = _raw_batches(tmp_path / "grouped", ranks=1, workers=1, batch=batch, buffer=500)
    got = sum(len({keys_grouped[k] for k in b}) for b in batches) / len(batches)
    assert got >= 0.8 * want, (got, want)  # 6.1 measured: 8 shards read at once, the default 500-sample buffer


def _flip(path: Path, offset: int, n: int = 4) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        data = f.read(n)
        f.seek(offset)
        f.write(bytes(b ^ 0x5A for b in data))


def _member_offsets(path: Path, sample: int, suffix: str) -> tuple[int, int]:
    """(header offset, data offset) of member ``suffix`` of the ``sample``-th sample of a shard."""
    import tarfile

    with tarfile.open(path) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith("." + suffix)]
    return members[sample].offset, members[sample].offset_data


def test_damaged_shards_are_named_and_counted_exactly(synth_shards: Path, tmp_path: Path) -> None:
    shards = copy_shards(synth_shards, tmp_path / "s")
    m = read_manifest(shards)["splits"]["train"]
    kw = dict(codec=_avel(shards), batch_size=4, img_size=32, num_workers=0, shuffle_buffer=16, seed=1, rank=0,
              world_size=1, epoch=0, epoch_batches=8)
    plan = TrainStream(shards, **{k: v for k, v in kw.items() if k != "num_workers"}).plan[0]
    whole = [p.shard for p, _ in plan if p.start == 0 and p.stop == m["shards"][p.shard]["samples"]]
    head, payload = (m["shards"][i]["file"] for i in whole[:2])  # shards this epoch reads from end to end
    count = {sh["file"]: sh["samples"] for sh in m["shards"]}
    _flip(shards / head, _member_offsets(shards / head, 3, "f5.jpg")[0] + 100)  # a tar header: the reader stops
    _flip(shards / payload, _member_offsets(shards / payload, 2, "fbank.npy")[1] + 5000)  # inside an fbank
    batches = list(make_train_loader(shards, **kw))
    problems = [p for b in batches for p in b["problems"]]
    assert sorted(problems) == sorted([f"shard {head}: sha256 mismatch with manifest; 4 of {count[head]} samples read",
                                       f"shard {payload}: sha256 mismatch with manifest; {count[payload]} of "
                                       f"{count[payload]} samples read"])
    # Samples 3.. of `head` never came whole (sample 3 lost its last members): all counted, all replaced.
    assert sum(b["skipped"] for b in batches) == count[head] - 3
    assert all(len(b["key"]) == 4 for b in batches) and len(batches) == 8
    resumed = list(make_train_loader(shards, **kw, start_batch=5))
    assert [(b["key"], b["skipped"], b["problems"]) for b in resumed] == \
           [(b["key"], b["skipped"], b["problems"]) for b in batches[5:]]


def test_a_shard_cut_short_inside_a_partly_read_piece_is_counted(synth_shards: Path, tmp_path: Path) -> None:
    """Two ranks of two workers read parts of shards (no hash); a shard that ends early is still reported."""
    shards = copy_shards(synth_shards, tmp_path / "s")
    kw = dict(codec=_avel(shards), batch_size=3, img_size=32, shuffle_buffer=8, rank=1, world_size=2, epoch=0,
              epoch_batches=5, workers=2)
    seed, piece = next((seed, p) for seed in range(20)
                       for p, _ in TrainStream(shards, seed=seed, **kw).plan[1] if p.start > 0)
    name = Path(synth_shards / read_manifest(shards)["splits"]["train"]["shards"][piece.shard]["file"]).name
    keys = [r.key for r in iter_raw_samples(shards / name)]
    with open(shards / name, "r+b") as f:  # cut exactly before the piece's first sample: a clean, short tar
        f.truncate(_member_offsets(synth_shards / name, piece.start, "f0.jpg")[0])
    ts = TrainStream(shards, seed=seed, **kw)
    ends = [x for x in ts.raw_pipeline(1) if isinstance(x, PieceEnd) and x.problem]
    assert [(e.missing, e.problem) for e in ends] == [
        (len(piece), f"shard {name}: the tar ends early (damaged or missing tar header); 0 of the {len(piece)} "
                     f"samples at positions {piece.start}..{piece.stop - 1} read")]
    assert keys[piece.start] not in {k for b in ts.pipeline(1, 0) for k in b["key"]}
