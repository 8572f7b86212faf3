"""One rank of the paper configuration on in-memory batches: ``torchrun ... paper_rank.py CONFIG [overrides]``.

The real training job (``run_training``: engine, checkpoints, resume) with the model and ZeRO stage of the
given config; only the data comes from ``trainkit.MemoryData`` (deterministic per position), because the
shards carry 128x102 spectrograms, which at ViT-L cost minutes per step on CPU.
"""

import logging
import sys

from avpea_dist.runtime import world as avdist
from avpea_dist.config_load import load_config
from avpea_dist.train.run import run_training

from trainkit import MemoryData

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    cfg = load_config(sys.argv[1], sys.argv[2:])
    rank = avdist.world_info_from_env().rank
    result = run_training(cfg, data=MemoryData(cfg, rank, epoch_batches=4, eval_batches=1))
    print(result, flush=True)
