"""Clip-level audio-visual classification (VGGSound: one label per clip; AudioSet: multi-label) on the
encoder's pooled audio and visual tokens. Reads 'clips' shards (``avpea shards build vggsound|audioset``)."""

from ...plugins import TaskSpec
from .config import ClassificationConfig

SPEC = TaskSpec(name="classification", task="avpea_dist.tasks.classification.task:ClassificationTask",
                schema="clips", section=ClassificationConfig, demo="avpea_dist.tasks.classification.demo:DEMO")
