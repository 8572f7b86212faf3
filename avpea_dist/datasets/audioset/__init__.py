"""AudioSet (Gemmeke et al. 2017): *_segments.csv + class_labels_indices.csv + the segment videos -> schema 'clips'.

The 'clips' shard schema (written by this dataset and by ``datasets/vggsound``; read by clip classification).
One sample per annotation row (one labelled segment of one YouTube video) whose video was found and decoded.

json member of a sample::

    {"id": "--PJHxphWEs",        # the YouTube id, verbatim (may start with '-' or hold '_')
     "key": "train-000042-...",  # == the tar key
     "split": "train",
     "start": 30.0, "end": 40.0, # the segment in the original video, seconds (floats)
     "labels": ["/m/09x0r", "/t/dd00088"]}   # verbatim, release order, no repeats

``labels`` are AudioSet label ids (mids) as the segments file writes them, or VGGSound's one label string
exactly as written (a list of one). Every label of a written sample is in ``classes`` (rows naming a label
outside the class index are skipped, see below).

Manifest (besides the format's own fields, ``data/manifest.py``):

- ``"schema": "clips"``, ``"dataset": "audioset"`` or ``"vggsound"``.
- ``"classes"``: class ids in index order (AudioSet: the ``mid`` column of class_labels_indices.csv in its
  ``index`` order; VGGSound: the label strings, sorted). A label's class index is ``classes.index(label)``.
- ``"class_names"``: display names, parallel to ``classes`` (AudioSet: ``display_name``; VGGSound: the same
  strings as ``classes``).
- ``"multilabel"``: true for AudioSet, false for VGGSound (exactly one label per sample).
- ``"validation"``: how val was formed: ``{"from": "train", "fraction": f, "seed": s, "rule": ...}`` (neither
  release has a validation split: a seeded hold-out of train videos, so all segments of one video stay in one
  split).
- ``"availability"``: ``{"rows", "written", "missing_videos", "undecodable", "skipped_rows" (bad or repeated
  rows, unknown labels), "available_fraction"}`` over all splits: how much of the release was available on disk.
- ``"annotations"``: the files read (rows, comment lines, skip counts per kind), ``video_pattern``, ``full_videos``.
- per split ``splits.<split>``: ``"rows"`` (annotation rows of that split) and ``"records"`` (== rows),
  ``"samples"`` (written), ``"skipped"``: ``[{"id", "start", "reason"}]``, with ``samples + len(skipped) ==
  rows`` checked by the builder; ``"missing_videos"`` (count of rows skipped because no video file was found),
  ``"undecodable"`` (rows whose video could not be decoded);
  ``"label_counts"``: ``{class id: samples written carrying it}`` in ``classes`` order, zeros included (for
  class-balanced sampling and prior baselines); ``"shards"``, ``"order_seed"`` as every schema.

Splits: AudioSet's balanced_train and unbalanced_train files are 'train', eval is 'test'; VGGSound's csv says
train/test; 'val' is the seeded hold-out of train.
"""

from ...plugins import DatasetSpec

SCHEMA = "clips"

SPEC = DatasetSpec(name="audioset", schema=SCHEMA, builder="avpea_dist.datasets.audioset.build:BUILDER",
                   synth="avpea_dist.datasets.audioset.synth:SYNTH",
                   description="from AudioSet: *_segments.csv + class_labels_indices.csv + the segment videos "
                               "(Y{id}.mp4, or --video-pattern)")
