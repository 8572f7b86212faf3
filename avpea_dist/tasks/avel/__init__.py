"""Audio-visual event localisation (AVEL) on AVE: one event class per one-second segment."""

from ...plugins import TaskSpec
from .config import AVELConfig

SPEC = TaskSpec(name="avel", task="avpea_dist.tasks.avel.task:AVELTask", schema="avel", section=AVELConfig,
                commands=("avpea_dist.apps.predict",),
                demo="avpea_dist.tasks.avel.demo:DEMO", resume_overridable=("avel.loss",))
