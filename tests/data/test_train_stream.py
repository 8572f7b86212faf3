"""The training stream is elastic: each global batch's samples depend on (seed, epoch) only, not on the world
size, the micro-batch or the worker count; every sample once per epoch; batches that mix classes as random
sampling does; a worker reads only its samples' bytes; a damaged shard reported (named, counted), never
silent; a restart at global batch k at any world size gives exactly batches k.. of the uninterrupted run."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from avpea_dist.data.epoch_plan import epoch_order, split_global_batch
from avpea_dist.data.loaders import make_train_loader
from avpea_dist.data.manifest import read_manifest
from avpea_dist.data.tario import bytes_read, iter_raw_samples
from avpea_dist.data.train_stream import TrainStream
from avpea_dist.tasks.avel.codec import AVELCodec

from .corrupt import copy_shards, cut_at_member
from .fakesplit import expected_classes_per_batch, write_split


def _avel(shards: Path) -> AVELCodec:
    return AVELCodec(len(read_manifest(shards)["classes"]))


def _global_batches(shards: Path, *, world: int, micro: int, workers: int, g: int, epoch: int = 0,
                    buffer: int = 100, epoch_batches: int | None = None) -> list[list[str]]:
    """Every global batch's keys in slot order, assembled from every rank's and worker's reads in this process
    (what each worker's micro-batches read; decoding reads nothing more)."""
    n = read_manifest(shards)["splits"]["train"]["samples"]
    e = epoch_batches or n // g
    batches: list[list[str]] = [[""] * g for _ in range(e)]
    for r in range(world):
        ts = TrainStream(shards, codec=_avel(shards), batch_size=micro, img_size=16, shuffle_buffer=buffer, seed=3,
                         rank=r, world_size=world, epoch=epoch, epoch_batches=e, global_batch=g)
        assert len(ts) == e * g // (world * micro)
        delivered = []
        for w in range(workers):
            for j in ts.worker_micro_batches(w, workers):
                b, first, numbers = ts.micro_samples(j)
                raws, problems = ts.read_samples(numbers)
                assert not problems and all(raw is not None for raw in raws)
                batches[b][first:first + micro] = [raw.key for raw in raws]
                delivered.append(j)
        assert sorted(delivered) == list(range(len(ts)))
    return batches


def test_global_batches_do_not_depend_on_world_size_micro_batch_or_workers(tmp_path: Path) -> None:
    n, g = 101, 12
    write_split(tmp_path / "s", [i % 5 for i in range(n)], shard_size=16)
    leftovers = []
    for epoch in range(3):
        ref = _global_batches(tmp_path / "s", world=1, micro=12, workers=1, g=g, epoch=epoch)
        for world, micro, workers in ((1, 4, 3), (2, 3, 1), (2, 6, 4), (3, 2, 2), (4, 3, 1), (6, 1, 5)):
            assert _global_batches(tmp_path / "s", world=world, micro=micro, workers=workers, g=g,
                                   epoch=epoch) == ref, (world, micro, workers)
        keys = [k for b in ref for k in b]
        assert len(keys) == len(set(keys)) == n // g * g  # each at most once, all but n % g (< g)
        leftovers.append(frozenset(f"s{i:05d}" for i in range(n)) - set(keys))
    assert len(set(leftovers)) == 3  # a different few left over each epoch


def test_a_longer_epoch_continues_with_the_next_lap_and_orders_are_seeded() -> None:
    counts = [16] * 6 + [5]
    one = epoch_order(counts, seed=1, epoch=0, samples=101, shuffle_buffer=20)
    assert sorted(one.tolist()) == list(range(101)) and one.dtype == np.int64
    two = epoch_order(counts, seed=1, epoch=0, samples=150, shuffle_buffer=20)
    assert np.array_equal(two[:101], one) and len(set(two[101:].tolist())) == 49
    assert not np.array_equal(one, epoch_order(counts, seed=1, epoch=1, samples=101, shuffle_buffer=20))
    assert not np.array_equal(one, epoch_order(counts, seed=2, epoch=0, samples=101, shuffle_buffer=20))
    with pytest.raises(ValueError, match="data.sampling='bogus' is not one of sequential, balanced"):
        epoch_order(counts, seed=1, epoch=0, samples=10, shuffle_buffer=20, sampling="bogus")


def test_the_global_batch_splits_into_micro_batches_or_names_the_world_sizes_that_can() -> None:
    assert split_global_batch(48, 4, 8) == (6, 2)  # 12 a rank: the largest micro-batch <= 8 dividing it
    assert split_global_batch(48, 1, 8) == (8, 6)
    assert split_global_batch(6, 3, 8) == (2, 1)
    assert split_global_batch(7, 1, 4) == (1, 7)  # a prime share: one clip at a time, still exact
    with pytest.raises(ValueError) as err:
        split_global_batch(12, 5, 8)
    assert str(err.value) == ("data.global_batch=12 cannot be split over 5 ranks; world sizes that divide it: "
                              "1, 2, 3, 4, 6, 12 (or set another data.global_batch)")


@pytest.mark.slow
def test_batches_mix_classes_as_random_sampling_does(tmp_path: Path) -> None:
    """AVE-like: 3,339 training records grouped by class (28 classes), as its annotation files are. Shards cut
    after a seeded shuffle of the records (as ``shards build`` does) give random sampling's mean classes per
    batch within 5% (the global batches, so at every layout); shards cut in class order still mix, since a
    window mixes up to 8 shards."""
    n, c, batch = 3339, 28, 8
    grouped = [i * c // n for i in range(n)]
    shuffled = random.Random(0).sample(grouped, n)
    keys_shuffled = write_split(tmp_path / "shuffled", shuffled, shard_size=336)
    keys_grouped = write_split(tmp_path / "grouped", grouped, shard_size=336)
    want = expected_classes_per_batch(grouped, batch)  # 7.07
    batches = _global_batches(tmp_path / "shuffled", world=2, micro=4, workers=3, g=batch, buffer=500)
    got = sum(len({keys_shuffled[k] for k in b}) for b in batches) / len(batches)
    assert abs(got - want) <= 0.05 * want, (got, want)
    batches = _global_batches(tmp_path / "grouped", world=1, micro=8, workers=1, g=batch, buffer=500)
    got = sum(len({keys_grouped[k] for k in b}) for b in batches) / len(batches)
    assert got >= 0.8 * want, (got, want)


def test_a_worker_reads_only_its_samples_bytes(tmp_path: Path) -> None:
    """64 ranks x 6 workers of one epoch read each delivered sample's bytes about once, located by the reader
    index (issue 24's bound: <= 1.5x)."""
    from avpea_dist.data import train_stream
    from avpea_dist.data.index import INDEX, write_split_indexes
    from avpea_dist.fileio import atomic_write_json

    write_split(tmp_path / "s", list(range(20)) * 40, shard_size=100, pad=20_000)
    body = write_split_indexes(tmp_path / "s", read_manifest(tmp_path / "s"), {})
    atomic_write_json(tmp_path / "s" / INDEX, body)
    per_sample = sum(p.stat().st_size for p in (tmp_path / "s").glob("*.tar")) / 800
    train_stream._OFFSETS.clear()
    before = bytes_read()
    keys = [k for b in _global_batches(tmp_path / "s", world=64, micro=1, workers=6, g=64) for k in b]
    ratio = (bytes_read() - before) / (len(keys) * per_sample)
    assert len(keys) == 768 and ratio <= 1.5, ratio
    assert not train_stream._OFFSETS  # no header walk: every offset came from the index


def test_damaged_shards_are_named_counted_and_replaced_the_same_at_any_world_size(synth_shards: Path,
                                                                                   tmp_path: Path) -> None:
    shards = copy_shards(synth_shards, tmp_path / "s")
    m = read_manifest(shards)["splits"]["train"]
    name = m["shards"][1]["file"]
    cut_at_member(shards / name, 12 * 3)  # shard 1 ends cleanly before its sample 3
    kw = dict(codec=_avel(shards), img_size=32, shuffle_buffer=16, seed=1, epoch=0, epoch_batches=6, global_batch=4)
    one = list(make_train_loader(shards, batch_size=4, num_workers=0, rank=0, world_size=1, **kw))
    lost = {r.key for r in iter_raw_samples(synth_shards / name)} - {r.key for r in iter_raw_samples(shards / name)}
    planned_lost = sum(1 for b in one for line in b["problems"] if name in line)
    assert planned_lost > 0 and all("the tar ends early" in line for b in one for line in b["problems"])
    assert all(len(b["key"]) == 4 for b in one) and sum(b["skipped"] for b in one) >= planned_lost
    assert not lost & {k for b in one for k in b["key"]}  # every lost sample replaced by a readable one
    two = [list(make_train_loader(shards, batch_size=2, num_workers=w, rank=r, world_size=2, **kw))
           for r, w in ((0, 0), (1, 2))]
    for k, batch in enumerate(one):  # the same samples, the same replacements, split over two ranks
        assert batch["key"] == two[0][k]["key"] + two[1][k]["key"]
        assert batch["skipped"] == two[0][k]["skipped"] + two[1][k]["skipped"]
    resumed = list(make_train_loader(shards, batch_size=1, num_workers=0, rank=2, world_size=4, start_batch=3,
                                     **kw))
    assert [b["key"][0] for b in resumed] == [b["key"][2] for b in one[3:]]


def test_balanced_sampling_is_cut_into_global_batches_the_same_way() -> None:
    from .test_balanced import _index

    idx = _index([[0]] * 90 + [[1]] * 10)
    order = epoch_order([100], seed=4, epoch=2, samples=60, shuffle_buffer=10, sampling="balanced", index=idx)
    assert np.array_equal(order, epoch_order([100], seed=4, epoch=2, samples=60, shuffle_buffer=10,
                                             sampling="balanced", index=idx))
    assert 0.3 < np.mean(order >= 90) < 0.7  # the rare class drawn about as often as the common one
    with pytest.raises(ValueError, match="needs the split's reader index"):
        epoch_order([100], seed=4, epoch=2, samples=60, shuffle_buffer=10, sampling="balanced")


def test_a_shard_rewritten_after_its_index_is_read_by_its_headers(synth_shards: Path, tmp_path: Path) -> None:
    """A shard changed after the build (here: one extra member, same tar size) no longer fits the index's
    offsets: the first failed read makes the stream walk its headers, and every sample still comes whole."""
    import io
    import tarfile

    shards = copy_shards(synth_shards, tmp_path / "s")
    name = read_manifest(shards)["splits"]["train"]["shards"][0]["file"]
    raws = list(iter_raw_samples(shards / name))
    with open(shards / name, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for i, raw in enumerate(raws):
            for suffix, data in list(raw.members.items()) + ([("note", b"x" * 600)] if i == 0 else []):
                info = tarfile.TarInfo(f"{raw.key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    ts = TrainStream(shards, codec=_avel(shards), batch_size=len(raws), img_size=32, shuffle_buffer=16, seed=0,
                     rank=0, world_size=1, epoch=0, epoch_batches=1)
    got, problems = ts.read_samples(np.arange(len(raws)))
    assert not problems and [r.key for r in got] == [r.key for r in raws]
    assert all(r.members["fbank.npy"] == w.members["fbank.npy"] for r, w in zip(got, raws))
    from avpea_dist.data import train_stream

    assert str(shards / name) in train_stream._DISTRUSTED or not ts._indexed(0)  # walked, not read at old offsets
