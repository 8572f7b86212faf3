"""The trainer's evaluation loop (train/evaluate.py) with a model-free task: every rank's parts summed,
gathered in rank order and reduced the same on every rank, however many batches each rank has (none
included); a clip seen twice, an empty split and a missing selection metric are errors; a ``reduce_once``
task reduces on rank 0 only and its failure reaches every rank."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from avpea_dist.tasks.base import EvalPart, Task
from avpea_dist.train.evaluate import evaluate_task


class Counting(Task):
    """Scores nothing: its parts are the batch's own fields, so the totals can be checked by hand."""

    name = "counting"
    schema = "test"
    selection_metric = "total"

    def __init__(self, reduce_once: bool = False, fail_on: str | None = None, metric: str = "total") -> None:
        super().__init__(None, None)
        self.reduce_once, self.fail_on, self.metric = reduce_once, fail_on, metric
        self.reduced_on: list[int] = []

    def eval_batch(self, model: nn.Module, batch: dict, device: torch.device) -> EvalPart:
        assert not model.training and not torch.is_grad_enabled()
        return EvalPart(sums={"value": batch["value"].sum(), "hist": torch.bincount(batch["value"], minlength=4)},
                        rows={"tokens": batch["tokens"]}, items={"key": list(batch["key"])})

    def eval_reduce(self, split: str, sums: dict, rows: dict, items: dict) -> dict:
        import torch.distributed as dist

        self.reduced_on.append(dist.get_rank() if dist.is_initialized() else 0)
        if self.fail_on == split:
            raise ValueError(f"cannot score {split}")
        return {self.metric: sums["value"].item(), "hist": sums["hist"].tolist(), "split": split,
                "tokens": rows["tokens"].tolist(), "keys": items["key"]}


def batch(keys: list[str], length: int, skipped: int = 0) -> dict:
    n = len(keys)
    value = torch.tensor([int(k[-1]) % 4 for k in keys], dtype=torch.int64)
    return {"key": keys, "value": value, "tokens": torch.full((n, length), n), "skipped": skipped}


def empty(skipped: int) -> dict:
    return {"key": [], "value": torch.zeros(0, dtype=torch.int64), "tokens": torch.zeros(0, 1), "skipped": skipped}


SHARES = {  # rank -> its batches: rank 1 has none, rank 2 has a batch whose clips were all skipped
    0: [batch(["a1", "a2"], 2), batch(["a3"], 3, skipped=1)],
    1: [],
    2: [empty(2), batch(["c1", "c2", "c3"], 1)],
}


def test_one_rank_sums_pads_rows_and_counts_samples_and_skipped():
    model = nn.Linear(1, 1).train()
    m = evaluate_task(Counting(), model, SHARES[0] + SHARES[2], torch.device("cpu"), split="val")
    assert model.training  # given back in the mode it came in
    assert m["total"] == 1 + 2 + 3 + 1 + 2 + 3 and m["hist"] == [0, 2, 2, 2] and m["split"] == "val"
    assert m["samples"] == 6 and m["skipped"] == 3 and m["keys"] == ["a1", "a2", "a3", "c1", "c2", "c3"]
    assert m["tokens"] == [[2, 2, 0], [2, 2, 0], [1, 1, 1], [3, 0, 0], [3, 0, 0], [3, 0, 0]]  # zero-padded


def test_a_clip_seen_twice_an_empty_split_and_a_missing_metric_are_errors():
    cpu, model = torch.device("cpu"), nn.Linear(1, 1)
    with pytest.raises(ValueError, match=r"evaluation saw clips \['a1'\] more than once"):
        evaluate_task(Counting(), model, [batch(["a1"], 1), batch(["a1"], 1)], cpu)
    with pytest.raises(ValueError, match=r"yielded no clips on any rank \(5 skipped\); check data.shards"):
        evaluate_task(Counting(), model, [empty(5)], cpu)
    with pytest.raises(KeyError, match=r"eval_reduce\(\) returned no 'total'"):
        evaluate_task(Counting(metric="other"), model, [batch(["a1"], 1)], cpu)


def _rank(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=3)
    try:
        cpu, model = torch.device("cpu"), nn.Linear(1, 1)
        every = Counting()
        result = {"every": evaluate_task(every, model, SHARES[rank], cpu, split="test"), "every_on": every.reduced_on}
        once = Counting(reduce_once=True)
        result["once"] = evaluate_task(once, model, SHARES[rank], cpu, split="test")
        result["once_on"] = once.reduced_on
        try:
            evaluate_task(Counting(reduce_once=True, fail_on="val"), model, SHARES[rank], cpu, split="val")
        except ValueError as e:
            result["error"] = str(e)
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_three_ranks_with_uneven_shares_get_the_same_result_as_one_rank(tmp_path):
    from avpea_dist.runtime.ports import free_port

    mp.spawn(_rank, args=(free_port(), str(tmp_path)), nprocs=3)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    alone = evaluate_task(Counting(), nn.Linear(1, 1), SHARES[0] + SHARES[1] + SHARES[2], torch.device("cpu"),
                          split="test")
    for r, got in enumerate(ranks):
        assert got["every"] == got["once"] == alone  # rank order = the order of one rank reading every share
        assert got["every_on"] == [r] and got["once_on"] == ([0] if r == 0 else [])
        assert "cannot score val" in got["error"]  # rank 0's failure, raised on every rank (none hangs)
