"""MUSIC-AVQA (Li et al. 2022): avqa-{train,val,test}.json + <video_id>.mp4 -> shards of schema 'avqa'."""

from ...plugins import DatasetSpec

SPEC = DatasetSpec(name="musicavqa", schema="avqa", builder="avpea_dist.datasets.musicavqa.build:BUILDER",
                   synth="avpea_dist.datasets.musicavqa.synth:SYNTH",
                   description="from the MUSIC-AVQA release: avqa-{train,val,test}.json + <video_id>.mp4")
