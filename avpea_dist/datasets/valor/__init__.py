"""VALOR-32K: desc_{train,val,test}.json (or txt_mapper_en.json + ids) + <video_id>.mp4 -> schema 'captions',
read by retrieval and captioning."""

from ...plugins import DatasetSpec

SPEC = DatasetSpec(name="valor", schema="captions", builder="avpea_dist.datasets.valor.build:BUILDER",
                   synth="avpea_dist.datasets.valor.synth:SYNTH",
                   description="from VALOR-32K: desc_{train,val,test}.json (or txt_mapper_en.json + "
                               "{train,test}_id.json) + <video_id>.mp4")
