"""Audio-visual retrieval (AVR) on VALOR-32K: text <-> clip, global negatives across ranks."""

from ...plugins import TaskSpec
from .config import RetrievalConfig

SPEC = TaskSpec(name="retrieval", task="avpea_dist.tasks.retrieval.task:RetrievalTask", schema="captions",
                section=RetrievalConfig, commands=("avpea_dist.apps.search",),
                demo="avpea_dist.tasks.retrieval.demo:DEMO")
