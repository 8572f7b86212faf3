"""What a task plug-in is: the contract between one task and the shared encoder, loader and trainer.

Data flows one way: shards -> stream -> encoder -> task head -> engine -> run folder. The stream decodes
what every sample has (one JPEG frame and one log-mel window per segment) and hands the sample's ``json``
member to the task's ``SampleCodec``; the shared encoder (frozen ViT + AV-PEA adapters) turns the media into
tokens; the task's head turns tokens (and the batch's task fields: labels, questions, captions) into
outputs; the task's loss and evaluation turn outputs into numbers. The trainer, checkpoints, exports,
exactly-once evaluation, Slurm and Ray Tune paths never look inside a task (torchtitan's ``TrainSpec``
is the model followed).

Evaluation is split the same way: the trainer (``train/evaluate.py``) owns the loop over a split, the
exactly-once accounting and every collective; a task only scores one batch (``eval_batch`` -> ``EvalPart``)
and turns the split's totals into its numbers (``eval_reduce``). A task never talks to other ranks while
evaluating, so it cannot deadlock them.

A task is a package under ``tasks/`` whose ``__init__.py`` defines ``SPEC = plugins.TaskSpec(...)`` (found
by ``plugins.task_specs``; the Task class is imported only when a run builds it). Adding a task adds a
folder; it edits neither the trainer nor the stream. A task package imports nothing from ``train/``,
``launch/`` or ``apps/`` (its ``commands.py`` excepted: that module is user-facing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..data.codec import SampleCodec  # noqa: F401  (the data layer's protocol; tasks implement it)

if TYPE_CHECKING:  # torch is imported by the modules that run models, not by config readers
    import torch
    from torch import nn

    from ..config import Config
    from ..models.encoder import EncoderOutput  # noqa: F401  (the head's input, see below)


@dataclass
class TaskLoss:
    """A training step's objective and what the metrics line reports about it."""

    loss: "torch.Tensor"
    """Scalar, fp32, differentiable; mean over this rank's micro-batch."""
    correct: Any = 0
    """Training predictions right in this micro-batch (a tensor or int; summed over ranks by the loop)."""
    count: int = 0
    """What ``correct`` is out of (segments for AVEL, questions for AVQA, 0 when the task has no accuracy)."""


@dataclass
class EvalPart:
    """What ``Task.eval_batch`` returns for one batch. The trainer combines the parts of every batch of every
    rank and hands the totals to ``Task.eval_reduce``; the key sets must not depend on the data (a rank whose
    share is empty returns no parts at all, and the others' keys stand for it)."""

    sums: "dict[str, torch.Tensor]" = field(default_factory=dict)
    """Added over batches in float64 (exact for counts), then summed over ranks with ONE all-reduce. A key's
    shape is the same in every batch (e.g. a per-class count vector)."""
    rows: "dict[str, torch.Tensor]" = field(default_factory=dict)
    """Per-sample (or per-caption, per-question) rows along dim 0: concatenated over batches, then gathered in
    rank order, on the CPU. Other dims may differ between batches (a token axis): they are zero-padded to the
    largest, so such a key should come with a mask row."""
    items: "dict[str, list[Any]]" = field(default_factory=dict)
    """Per-sample Python values (ids, captions, references): concatenated and gathered like ``rows``."""


class Task:
    """Base class of a task plug-in. Subclasses set the class attributes and implement the methods.

    Lifetime: one instance per rank per run, built by the trainer as ``Task(cfg, manifest)`` after the shard
    manifest is read (``manifest`` is None for a model built without shards: ``avpea predict``).
    """

    name: ClassVar[str]
    """The value of the config's ``task`` key that picks this task."""
    schema: ClassVar[str]
    """The shard schema this task reads (``manifest["schema"]``; shards written before schemas existed are
    'avel'). Retrieval and captioning share the 'captions' schema."""
    selection_metric: ClassVar[str]
    """Key of the evaluation's result (``eval_reduce``) maximised on val to keep the best model (never on test)."""
    metric_label: ClassVar[str] = ""
    """How the selection metric reads in messages ('accuracy', 'overall accuracy', 'R@1 sum', 'CIDEr')."""
    reduce_once: ClassVar[bool] = False
    """True: ``eval_reduce`` runs on rank 0 only and its result (or its ValueError) is broadcast to the
    others. For a reduce too costly to repeat on every rank, or one that starts an external scorer
    (captioning's Java METEOR); False: every rank reduces the same totals itself (no extra collective)."""

    def __init__(self, cfg: "Config", manifest: dict[str, Any] | None) -> None:
        """Check the config against the shards (class count, vocabulary, tokenizer...): a mismatch is a
        ``ConfigError`` naming the key and the fix."""
        self.cfg = cfg
        self.manifest = manifest

    def codec(self, split: str, epoch: int) -> SampleCodec:
        """The sample codec of ``split`` (train or an eval split) in virtual epoch ``epoch`` (training may
        pick, e.g., one caption per video per epoch, as a pure function of seed, epoch and key)."""
        raise NotImplementedError

    def build_head(self, embed_dim: int, streams: tuple[str, ...]) -> "nn.Module":
        """The task head: ``head(enc: EncoderOutput, batch: dict) -> outputs``. Built right after the encoder
        (the initialisation order is part of a seed's result). Everything trainable outside the encoder's
        adapters lives in the head (text encoders, decoders, projections, temperatures): the trainer gives
        it the head learning rate, checkpoints and exports it. Frozen parts are reloaded by ``build_head``."""
        raise NotImplementedError

    def loss(self, outputs: Any, batch: dict[str, Any]) -> TaskLoss:
        """The training objective on this rank's micro-batch (a contrastive task gathers across ranks here,
        with gradients)."""
        raise NotImplementedError

    def eval_batch(self, model: "nn.Module", batch: dict[str, Any], device: "torch.device") -> EvalPart:
        """Score one batch of this rank's exactly-once share of a split (never an empty batch: the trainer
        counts those). Runs under ``torch.no_grad`` with the model in eval mode; moves what it needs to
        ``device`` itself (``to_device``). No collectives here: ranks get different numbers of batches."""
        raise NotImplementedError

    def eval_reduce(self, split: str, sums: "dict[str, torch.Tensor]", rows: "dict[str, torch.Tensor]",
                    items: dict[str, list[Any]]) -> dict[str, Any]:
        """The split's numbers from every rank's totals (``sums`` float64, ``rows``/``items`` in rank order;
        a key no rank produced is absent). Must give the same dict on every rank: flat scalars (float, int
        or None) go to metrics.jsonl and must include ``selection_metric``; nested values (tables,
        examples) stay in result.json, except ``outputs`` (per-sample outputs, e.g. every caption), which
        the final evaluation writes to ``RUN/outputs_<split>.json``. The trainer adds ``samples`` (clips
        scored) and ``skipped`` (clips the loader could not decode). Raise ValueError for a result that
        cannot be computed (the message names the cause)."""
        raise NotImplementedError

    def signature(self) -> dict[str, Any]:
        """Settings of this task a checkpoint is bound to besides the model's (e.g. the head's sizes, the
        vocabulary's hash), as plain JSON values: a resume with other values is refused. Keys are dotted
        config names ('avqa.lstm_hidden')."""
        return {}

    def baselines(self, split: str) -> dict[str, Any]:
        """Model-free reference figures on ``split`` from the manifest/shards (majority class, most frequent
        answer per question kind, most frequent caption), same keys as ``eval_reduce``; {} when none."""
        return {}

    # -- Examples: what the shipped-config test (tests/train/test_shipped_configs.py) trains one step on --

    @classmethod
    def example_manifest(cls, cfg: "Config", folder: Any) -> dict[str, Any] | None:
        """A manifest good enough to build this task without shards (classes, vocabulary, a text model
        folder written under ``folder``, a pathlib.Path), or None when the task needs none."""
        return None

    def example_meta(self, index: int) -> dict[str, Any]:
        """Sample ``index``'s ``json`` member as this task's shard builder writes it (synthetic content)."""
        raise NotImplementedError(f"task {self.name!r} has no example_meta (see tasks/base.py)")

    def example_batch(self, batch_size: int, seed: int = 0, split: str = "train") -> dict[str, Any]:
        """A batch as the stream yields it: random media at the config's sizes, and the task fields made by
        ``codec(split, 0)`` from ``example_meta`` (so the codec itself is exercised)."""
        import torch

        m, g = self.cfg.model, torch.Generator().manual_seed(seed)
        keys = [f"{split}-{seed * batch_size + i:05d}-example" for i in range(batch_size)]
        codec = self.codec(split, 0)
        targets = [codec.parse({**self.example_meta(seed * batch_size + i), "key": k}, k) for i, k in enumerate(keys)]
        T = m.num_segments
        return {"frames": torch.randint(0, 256, (batch_size, T, 3, m.img_size, m.img_size), dtype=torch.uint8,
                                        generator=g),
                "audio": torch.randn(batch_size, T, m.mel_bins, m.audio_frames, generator=g),
                **codec.collate(targets), "key": keys, "skipped": 0, "problems": []}


def batch_size_of(batch: dict[str, Any]) -> int:
    """Clips in a batch (every batch carries one key per clip)."""
    return len(batch.get("key", ()))


def to_device(batch: dict[str, Any], device: "torch.device", streams: tuple[str, ...] = ("a", "v")) -> dict[str, Any]:
    """The batch with every tensor on ``device``; the media of a stream the model lacks (the ablations) is
    dropped (None) instead of copied."""
    import torch

    drop = {name for name, s in (("frames", "v"), ("audio", "a")) if s not in streams}
    return {k: None if k in drop else v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}
