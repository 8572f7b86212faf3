"""The retrieval task plug-in (AVR on VALOR-32K): text <-> clip, with global negatives across ranks.

Reads 'captions' shards (VALOR's layout, built by ``avpea shards build valor``). Training: one caption per
clip per epoch (the captions codec, ``datasets/valor/codec.py``), symmetric InfoNCE against every rank's
clips and captions (loss.py). Evaluation: every clip and caption of the split embedded exactly once across
ranks (rows the trainer gathers), ranked on the full caption x clip similarity matrix (metrics.py). Selection on val 'r_sum' (R@1 + R@5 + R@10, both directions): the
six recalls together are steadier on a small val split than R@1 alone. VALOR's own configs select on
test; we never do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError
from ..base import EvalPart, Task, TaskLoss, to_device
from ...datasets.valor.textmodel import freeze, is_available_offline, load_text_model, resolve_text_model
from ...datasets.valor.codec import CaptionCodec
from .head import RetrievalHead, RetrievalOutput, fine_similarity
from .loss import contrastive_loss, gather_rows
from .metrics import retrieval_metrics


class RetrievalTask(Task):
    name = "retrieval"
    schema = "captions"
    selection_metric = "r_sum"
    metric_label = "R-sum (R@1+5+10, text-to-video + video-to-text)"

    def __init__(self, cfg: Any, manifest: dict[str, Any] | None) -> None:
        super().__init__(cfg, manifest)
        if manifest is not None and manifest.get("schema", "avel") != self.schema:
            raise ConfigError(f"task 'retrieval' reads shards of schema 'captions', but {cfg.data.shards} holds "
                              f"'{manifest.get('schema', 'avel')}' shards; build them with `avpea shards build "
                              f"valor` (or `avpea shards synth valor` then build) and set data.shards")
        self.rcfg = cfg.retrieval
        self.text_source = resolve_text_model(self.rcfg.text_model, cfg.data.shards, manifest)

    def signature(self) -> dict[str, Any]:
        """A checkpoint holds the head's projections (and a trained text encoder): their shapes and meaning."""
        r = self.rcfg
        return {f"retrieval.{k}": getattr(r, k) for k in ("text_model", "train_text", "embed_dim", "pooling",
                                                            "text_pooling")}

    def codec(self, split: str, epoch: int) -> CaptionCodec:
        return CaptionCodec(self.text_source, self.rcfg.max_text_len, train=split == "train",
                            seed=self.cfg.train.seed, epoch=epoch)

    def build_head(self, embed_dim: int, streams: tuple[str, ...]) -> nn.Module:
        """Projections and temperature are initialised from the current RNG state (after the encoder); the
        text encoder is read from its folder (frozen ones are reloaded from there, never exported)."""
        text = freeze(load_text_model(self.text_source), self.rcfg.train_text)
        return RetrievalHead(embed_dim, tuple(streams), text, self.rcfg)

    # -- examples (the shipped-config test: no shards) ---------------------------------------------

    @classmethod
    def example_manifest(cls, cfg: Any, folder: Any) -> dict[str, Any]:
        """A 'captions' manifest naming a tiny text model saved under ``folder`` (the build's own text folder,
        trained on example captions). A configured text model that is not available offline (a hub name
        outside the local cache, e.g. bert-base-uncased on a fresh machine) is replaced in ``cfg`` by that
        folder, so the config's structure is still exercised (all but the text encoder's size)."""
        from ...datasets.valor.text import TextSpec, save_text_folder

        text = Path(folder) / "example_text"
        captions = [cls._example_caption(i) for i in range(16)]
        save_text_folder(text, captions, TextSpec(vocab_size=200, hidden_size=32, intermediate_size=64))
        if cfg.retrieval.text_model != "shards" and not is_available_offline(cfg.retrieval.text_model):
            cfg.retrieval.text_model = str(text)
        return {"schema": "captions", "text": {"folder": str(text.resolve())}, "splits": {},
                "most_frequent_caption": captions[0]}

    @staticmethod
    def _example_caption(i: int) -> str:
        colours, sounds = ("red", "green", "blue", "white"), ("chord", "whistle", "beeping", "drum")
        return f"a {colours[i % 4]} square on the left while a high {sounds[(i // 4) % 4]} plays"

    def example_meta(self, index: int) -> dict[str, Any]:
        captions = [self._example_caption(index)] + ([self._example_caption(index + 5)] if index % 2 else [])
        return {"id": f"exAmple-{index}_0_10", "split": "train", "captions": captions}

    # -- training ------------------------------------------------------------------------------

    def loss(self, outputs: RetrievalOutput, batch: dict[str, Any]) -> TaskLoss:
        """Symmetric InfoNCE, this rank's rows against all ranks' columns (see loss.py for the scale).
        ``correct``: this rank's captions whose own clip scores highest among all ranks' clips."""
        o = outputs
        b = o.clip.shape[0]
        if o.text.shape[0] != b or not torch.equal(o.caption_video, torch.arange(b, device=o.caption_video.device)):
            raise ValueError(f"training needs exactly one caption per clip in clip order (got {o.text.shape[0]} "
                             f"captions for {b} clips): use the task's training codec")
        if self.rcfg.pooling == "fine":
            (clips, texts, masks), first, total = gather_rows(o.clip_tokens, o.text_tokens, o.text_mask)
            rows = fine_similarity(o.text_tokens, o.text_mask, clips)
            cols = fine_similarity(texts, masks, o.clip_tokens).t()
        else:
            (clips, texts), first, total = gather_rows(o.clip, o.text)
            rows, cols = o.text @ clips.t(), o.clip @ texts.t()
        if total == 0:
            return TaskLoss(o.logit_scale * 0.0, 0, 0)
        loss = contrastive_loss(o.logit_scale * rows, o.logit_scale * cols, first, total)
        correct = (rows.detach().argmax(1) == torch.arange(first, first + b, device=rows.device)).sum()
        return TaskLoss(loss, correct, b)

    # -- evaluation ----------------------------------------------------------------------------

    def eval_batch(self, model: nn.Module, batch: dict[str, Any], device: torch.device) -> EvalPart:
        """This batch's clip and caption embeddings; each caption names its clip by key (global positions
        are only known once every rank's rows are gathered)."""
        out = model(to_device(batch, device, model.streams))
        keys = list(batch["key"])
        rows = {"clip": out.clip.float().cpu(), "text": out.text.float().cpu()}
        if out.clip_tokens is not None:
            rows.update(clip_tok=out.clip_tokens.float().cpu(), text_tok=out.text_tokens.float().cpu(),
                        text_mask=out.text_mask.cpu())
        return EvalPart(rows=rows, items={"clip_key": keys,
                                          "caption_key": [keys[i] for i in out.caption_video.tolist()]})

    def eval_reduce(self, split: str, sums: dict[str, torch.Tensor], rows: dict[str, torch.Tensor],
                    items: dict[str, list]) -> dict[str, Any]:
        """Ranked on the full caption x clip matrix of the split. t2v: each caption ranks its own clip among
        all clips; v2t: a clip counts as found at the best rank of any of its captions (VALOR's rule).
        -> metrics.py's keys."""
        position = {k: i for i, k in enumerate(items["clip_key"])}
        owner = torch.tensor([position[k] for k in items["caption_key"]], dtype=torch.long)
        if self.rcfg.pooling == "fine":
            # Trim the token axis to the longest real caption: the same shapes as one padded batch of them all.
            mask = rows["text_mask"]
            longest = int(mask.sum(1).max())
            sim = fine_similarity(rows["text_tok"][:, :longest], mask[:, :longest], rows["clip_tok"])
        else:
            sim = rows["text"] @ rows["clip"].t()
        return retrieval_metrics(sim, owner)
