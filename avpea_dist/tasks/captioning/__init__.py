"""Audio-visual captioning (AVC) on VALOR-32K: a text decoder over the AV-PEA encoder's tokens."""

from ...plugins import TaskSpec
from .config import CaptioningConfig

SPEC = TaskSpec(name="captioning", task="avpea_dist.tasks.captioning.task:CaptioningTask", schema="captions",
                section=CaptioningConfig, commands=("avpea_dist.apps.caption",),
                demo="avpea_dist.tasks.captioning.demo:DEMO")
