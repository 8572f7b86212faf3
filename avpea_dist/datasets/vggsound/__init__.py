"""VGGSound (Chen et al. 2020): vggsound.csv + the 10 s clips -> schema 'clips' (single-label; the schema is
described in ``datasets/audioset/__init__.py``)."""

from ...plugins import DatasetSpec

SPEC = DatasetSpec(name="vggsound", schema="clips", builder="avpea_dist.datasets.vggsound.build:BUILDER",
                   description="from VGGSound: vggsound.csv + the clips ({id}_{start:06d}.mp4, or --video-pattern)")
