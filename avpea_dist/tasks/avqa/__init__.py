"""Audio-visual question answering on MUSIC-AVQA: codec, the AVST head, per-kind metrics."""

from ...plugins import TaskSpec
from .config import AVQAConfig

SPEC = TaskSpec(name="avqa", task="avpea_dist.tasks.avqa.task:AVQATask", schema="avqa", section=AVQAConfig,
                demo="avpea_dist.tasks.avqa.demo:DEMO")
