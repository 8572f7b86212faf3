"""One rank of the AVQA end-to-end test (started by torchrun from test_avqa_task.py): train avqa_tiny a few
steps through the unchanged trainer, then check on this rank's exactly-once share of val and test:

* which question ids it scored (gathered on rank 0: every question of the split exactly once);
* that the encoder ran once per video: the number of encode calls and clips encoded per batch, against
  the number of questions answered;
* that answering a batch of videos equals answering each question alone with its own video.

Writes ``<out>/rank<R>.json``.  Usage: avqa_rank.py SHARDS OUT
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

REPO = Path(__file__).resolve().parents[2]
OVERRIDES = ["model.img_size=32", "data.batch_size=2", "data.num_workers=0", "eval.batch_size=3",
             "train.steps=2", "train.eval_every=2", "train.ckpt_every=2", "train.log_every=1", "train.progress=false",
             "optim.warmup_steps=1", "dist.timeout_s=120"]


def main(shards: str, out: str) -> None:
    from avpea_dist.config_load import load_config
    from avpea_dist.data.manifest import read_manifest
    from avpea_dist.models.model import build_model
    from avpea_dist.tasks.registry import build_task
    from avpea_dist.train.data_source import ShardData
    from avpea_dist.train.evaluate import evaluate_task
    from avpea_dist.train.run import run_training

    cfg = load_config(REPO / "configs" / "avqa_tiny.yaml", [*OVERRIDES, f"data.shards={shards}", f"train.out={out}/run"])
    result = run_training(cfg)  # joins the process group; tears it down at the end
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    # A fresh rendezvous, not torchrun's store again: the destroyed group's keys are still in that store
    # under the same names, and a rank that reads them connects to the dead group and hangs.
    dist.init_process_group("gloo", init_method=f"file://{Path(out).resolve()}/store", rank=rank, world_size=world)
    manifest = read_manifest(shards)
    task = build_task(cfg, manifest)
    torch.manual_seed(0)
    model = build_model(cfg.model, task=task).eval()
    data = ShardData(cfg, rank, world, task)

    encoded = []  # clips per encode call
    plain_encode = model.encode

    def counting_encode(frames, audio):
        encoded.append(int((frames if frames is not None else audio).shape[0]))
        return plain_encode(frames, audio)

    model.encode = counting_encode
    mine: dict[str, dict] = {}
    for split in ("val", "test"):
        batches = list(data.eval_batches(split))
        before = len(encoded)
        metrics = evaluate_task(task, model, batches, torch.device("cpu"), split=split)
        mine[split] = {"question_ids": [i for b in batches for i in b["question_ids"]],
                       "encoded": encoded[before:], "clips": [len(b["key"]) for b in batches if b["key"]],
                       "questions_per_batch": [len(b["question_ids"]) for b in batches if b["key"]],
                       "metrics": {k: metrics[k] for k in ("questions", "samples", "skipped", "overall")},
                       "manifest_questions": manifest["splits"][split]["questions"]}
    mine["alone_max_diff"] = alone_vs_batched(model, plain_encode, next(iter(data.eval_batches("test"))))
    gathered = [None] * world
    dist.all_gather_object(gathered, mine)
    dist.barrier()
    dist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps({"result": result if rank == 0 else None,
                                                         "ranks": gathered}))


@torch.no_grad()
def alone_vs_batched(model, encode, batch) -> float:
    """Largest difference between a question's logits in the batch and with its video alone."""
    together = model.head(encode(batch["frames"], batch["audio"]), batch).logits
    worst = 0.0
    for q, v in enumerate(batch["question_video"].tolist()):
        one = {"questions": batch["questions"][q:q + 1], "question_video": torch.zeros(1, dtype=torch.long)}
        alone = model.head(encode(batch["frames"][v:v + 1], batch["audio"][v:v + 1]), one).logits
        worst = max(worst, (alone - together[q:q + 1]).abs().max().item())
    return worst


if __name__ == "__main__":
    main(*sys.argv[1:])
