"""One rank of a run whose global batches do not depend on the world size: ``torchrun ... elastic_rank.py
GLOBAL_BATCH CONFIG [overrides]``. The real training job (``run_training``) on in-memory data: global batch g
of an epoch is one fixed set of GLOBAL_BATCH clips (``trainkit.fake_batch`` seeded by (epoch, g)); rank r of
W trains on its contiguous GLOBAL_BATCH / W slice, in one micro-batch."""

import logging
import sys

from avpea_dist.config_load import load_config
from avpea_dist.runtime import world as avdist
from avpea_dist.train.run import run_training

from trainkit import fake_batch


class GlobalMemoryData:
    def __init__(self, cfg, rank: int, world: int, global_batch: int, epoch_batches: int = 4) -> None:
        self.cfg, self.rank, self.world = cfg, rank, world
        self.global_batch, self.micro_batch, self.grad_accum = global_batch, global_batch // world, 1
        self.epoch_batches = epoch_batches
        self.big = load_config(sys.argv[2], sys.argv[3:] + [f"data.batch_size={global_batch}"])

    def _slice(self, batch):
        n = self.micro_batch
        cut = slice(self.rank * n, (self.rank + 1) * n)
        return {k: (v[cut] if hasattr(v, "__getitem__") and not isinstance(v, (str, int)) else v)
                for k, v in batch.items()}

    def train_batches(self, epoch: int, start_batch: int):
        for g in range(start_batch, self.epoch_batches):
            yield self._slice(fake_batch(self.big, 1000 * epoch + g))

    def eval_batches(self, split: str):
        yield self._slice(fake_batch(self.big, 99_000))

    def label_histogram(self, split: str):
        return None


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    global_batch = int(sys.argv[1])
    cfg = load_config(sys.argv[2], sys.argv[3:] + [f"data.global_batch={global_batch}"])
    info = avdist.world_info_from_env()
    result = run_training(cfg, data=GlobalMemoryData(cfg, info.rank, info.world_size, global_batch))
    print(result, flush=True)
