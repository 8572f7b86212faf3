"""Audio-visual captioning (VALOR-32K AVC) as a task plug-in: a text decoder on the AV-PEA encoder.

- Shards: schema 'captions' (shared with retrieval, and so is its codec: ``datasets/valor/codec.py``). The tokenizer is the shards' text folder for the
  'scratch' decoder, or the Hugging Face model's own.
- Head: ``head.CaptioningHead`` (memory of all encoder tokens, 'scratch' or Hugging Face decoder).
- Loss: teacher-forced cross-entropy on the caption tokens (``captioning.label_smoothing``); the training
  line's accuracy is next-token accuracy.
- Evaluation: every clip of the split captioned once (beam ``captioning.beam``); the trainer gathers the
  (id, caption, references) of all ranks and the task scores them on rank 0 with pycocoevalcap
  (``metrics.py``, ``reduce_once``), the numbers broadcast back. Selection on val CIDEr-D. The final evaluation's captions of every clip go to
  ``RUN/outputs_test.json`` (the result's ``outputs``), 8 of them also to result.json (``examples``).
- Baseline: the most frequent training caption (manifest ``most_frequent_caption``) for every clip.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError
from ..base import EvalPart, Task, TaskLoss, to_device
from ...datasets.valor.textmodel import resolve_text_model
from ...datasets.valor.codec import CaptionCodec
from .tokenizer import load_tokenizer
from .head import CaptioningHead, TextSpec, caption_loss
from .metrics import score_captions

log = logging.getLogger(__name__)
EXAMPLES = 8  # captions kept in the result (nested, in result.json) to show what the model writes


class CaptioningTask(Task):
    name = "captioning"
    schema = "captions"
    selection_metric = "cider"
    metric_label = "CIDEr-D"
    reduce_once = True  # pycocoevalcap (Java METEOR and PTB) scores once, on rank 0

    def __init__(self, cfg: Any, manifest: dict[str, Any] | None) -> None:
        super().__init__(cfg, manifest)
        self.section = cfg.captioning
        if manifest is not None and manifest.get("schema", "avel") != self.schema:
            raise ConfigError(f"task captioning needs shards of schema 'captions' (VALOR layout: avpea shards build "
                              f"valor); {cfg.data.shards} holds schema {manifest.get('schema', 'avel')!r}")
        decoder = cfg.captioning.decoder
        if manifest is not None and manifest.get("example_decoder"):  # example manifests only: see example_manifest
            log.warning("captioning.decoder=%s is not available here; this example build uses %s instead",
                        decoder, manifest["example_decoder"])
            decoder = manifest["example_decoder"]
        # 'scratch' writes with the shards' tokenizer; any other decoder brings its own.
        self.tokenizer_source = resolve_text_model("shards" if decoder == "scratch" else decoder, cfg.data.shards,
                                                   manifest, key="captioning.decoder")
        self.decoder_source = "scratch" if decoder == "scratch" else self.tokenizer_source
        self.tokenizer = load_tokenizer(self.tokenizer_source)
        tok = self.tokenizer
        self.text = TextSpec(len(tok), tok.cls_token_id, tok.sep_token_id, tok.pad_token_id)

    # ---- examples (no shards: the shipped-config test)

    @classmethod
    def example_manifest(cls, cfg: Any, folder: Any) -> dict[str, Any]:
        """A captions manifest whose text folder (tokenizer + small BERT, as the shard build saves them) is
        written under ``folder``. A Hugging Face decoder that is neither a folder nor in the local cache (e.g.
        bert-base-uncased on a machine that never downloaded it) is replaced by that small BERT ('shards')."""
        from ...datasets.valor.text import save_text_folder
        from ...datasets.valor.textmodel import load_tokenizer as cached

        text = Path(folder) / "example_text"
        save_text_folder(text, [example_caption(i) for i in range(64)])
        manifest = {"schema": cls.schema, "text": {"folder": str(text.resolve())},
                    "most_frequent_caption": example_caption(0), "splits": {}}
        if cfg.captioning.decoder not in ("scratch", "shards"):
            try:
                cached(resolve_text_model(cfg.captioning.decoder, None, manifest, key="captioning.decoder"))
            except (FileNotFoundError, ValueError):
                manifest["example_decoder"] = "shards"
        return manifest

    def example_meta(self, index: int) -> dict[str, Any]:
        return {"id": f"example_{index}", "split": "train",
                "captions": [example_caption(index), example_caption(index + 7)][: 1 + index % 2]}

    # ---- data

    def codec(self, split: str, epoch: int) -> CaptionCodec:
        return CaptionCodec(self.tokenizer_source, self.section.max_len, train=split == "train",
                            seed=self.cfg.train.seed, epoch=epoch)

    def signature(self) -> dict[str, Any]:
        """What a checkpoint of this head is bound to: the decoder, its sizes and the tokenizer's vocabulary."""
        sec = self.section
        sig: dict[str, Any] = {"captioning.decoder": sec.decoder, "captioning.vocab_size": self.text.vocab_size}
        if sec.decoder == "scratch":
            sig.update({f"captioning.{k}": getattr(sec, k) for k in ("layers", "width", "heads", "max_len")})
        return sig

    # ---- model

    def build_head(self, embed_dim: int, streams: tuple[str, ...]) -> nn.Module:
        return CaptioningHead(embed_dim, tuple(streams), self.cfg.model.num_segments, self.text, self.section,
                              self.decoder_source)

    def loss(self, outputs: torch.Tensor, batch: dict[str, Any]) -> TaskLoss:
        loss, hits, tokens = caption_loss(outputs, batch, self.section.label_smoothing)
        return TaskLoss(loss, hits, tokens)

    def caption(self, model: nn.Module, frames: torch.Tensor | None, audio: torch.Tensor | None, *,
                beam: int | None = None) -> list[str]:
        """One caption per clip of the media batch (frames (B, T, 3, H, W) uint8, audio (B, T, mel, frames));
        the code path of evaluation and of ``avpea caption``."""
        inner = getattr(model, "module", model)  # a DeepSpeed engine wraps the model
        streams = inner.streams
        enc = inner.encode(frames if "v" in streams else None, audio if "a" in streams else None)
        ids = inner.head.generate(enc, beam=beam or self.section.beam, length_penalty=self.section.length_penalty)
        return [" ".join(t.split()) for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # ---- evaluation

    def eval_batch(self, model: nn.Module, batch: dict[str, Any], device: torch.device) -> EvalPart:
        media = to_device({"frames": batch["frames"], "audio": batch["audio"]}, device, model.streams)
        texts = self.caption(model, media["frames"], media["audio"])
        return EvalPart(items={"clip_id": list(batch["clip_ids"]), "caption": texts,
                               "references": list(batch["captions"])})

    def eval_reduce(self, split: str, sums: dict[str, torch.Tensor], rows: dict[str, torch.Tensor],
                    items: dict[str, list]) -> dict[str, Any]:
        return score_records(list(zip(items["clip_id"], items["caption"], items["references"])))

    def baselines(self, split: str) -> dict[str, Any]:
        """The most frequent training caption as every clip's caption, scored like the model."""
        caption = (self.manifest or {}).get("most_frequent_caption")
        if not caption:
            return {}
        refs = split_references(self.cfg.data.shards, self.manifest, split)
        scores = score_captions(refs, {k: caption for k in refs})
        return {**scores, "samples": len(refs), "caption": caption}


def example_caption(index: int) -> str:
    """A caption in the synthetic set's style (the example hooks' text)."""
    colours, shapes, sounds = ("red", "green", "blue", "yellow"), ("square", "circle", "checkerboard"), ("chord", "bell")
    return (f"a {colours[index % 4]} {shapes[index % 3]} on the {('left', 'right')[index % 2]} while a "
            f"{('low', 'high')[index // 2 % 2]} {sounds[index // 3 % 2]} plays")


def score_records(records: list[tuple[str, str, list[str]]]) -> dict[str, Any]:
    """(clip id, caption, references) of every clip of the split -> the caption metrics, ``examples`` (a few
    captions, kept in result.json) and ``outputs`` (all of them, for RUN/outputs_<split>.json)."""
    refs: dict[str, list[str]] = {}
    cands: dict[str, str] = {}
    for clip_id, caption, references in records:
        if clip_id in cands:
            raise ValueError(f"clip {clip_id!r} was captioned twice: the evaluation split must give each clip "
                             f"to one rank (duplicate id in the shards?)")
        refs[clip_id], cands[clip_id] = list(references), caption
    if not cands:
        raise ValueError("the evaluation split yielded no clips on any rank; check the shards folder and its "
                         "manifest (avpea shards verify)")
    scores = score_captions(refs, cands)
    outputs = [{"id": k, "caption": cands[k], "references": refs[k]} for k in sorted(cands)]
    return {**{k: v for k, v in scores.items() if k != "clips"}, "examples": outputs[:EXAMPLES], "outputs": outputs}


def split_references(shards: str | Path, manifest: dict[str, Any] | None, split: str) -> dict[str, list[str]]:
    """{clip id: captions} of every sample of ``split`` as written in the shards' json members."""
    from ...data.index import load_index
    from ...data.tario import iter_raw_samples

    if manifest is None or split not in manifest.get("splits", {}):
        raise ValueError(f"split {split!r} is not in the manifest of {shards}")
    refs: dict[str, list[str]] = {}
    index = load_index(shards, split)  # the shard list is the readers' index's (the manifest's at 2M is large)
    for shard in range(len(index.files)):
        for raw in iter_raw_samples(index.url(shard)):
            if raw.error or "json" not in raw.members:
                continue
            meta = json.loads(raw.members["json"])
            caps = [c for c in meta.get("captions", []) if isinstance(c, str) and c.strip()]
            if caps:
                refs[str(meta.get("id", raw.key))] = caps
    return refs
