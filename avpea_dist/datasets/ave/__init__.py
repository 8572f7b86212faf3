"""AVE (Tian et al. 2018): Annotations.txt + {train,val,test}Set.txt + AVE/<id>.mp4 -> shards of schema 'avel'."""

from ...plugins import DatasetSpec

SPEC = DatasetSpec(name="ave", schema="avel", builder="avpea_dist.datasets.ave.build:BUILDER",
                   synth="avpea_dist.datasets.ave.synth:SYNTH",
                   description="from the AVE release layout: Annotations.txt, {train,val,test}Set.txt, AVE/*.mp4")
