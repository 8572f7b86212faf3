"""What a task plug-in is: the contract between one task and the shared encoder, loader and trainer.

Data flows one way: shards -> stream -> encoder -> task head -> engine -> run folder. The stream decodes
what every sample has (one JPEG frame and one log-mel window per segment) and hands the sample's ``json``
member to the task's ``SampleCodec``; the shared encoder (frozen ViT + AV-PEA adapters) turns the media into
tokens; the task's head turns tokens (and the batch's task fields: labels, questions, captions) into
outputs; the task's loss and evaluation turn outputs into numbers. The trainer, checkpoints, exports,
exactly-once evaluation, Slurm and Ray Tune paths never look inside a task (torchtitan's ``TrainSpec``
is the model followed).

A task is registered by name in ``tasks/registry.py`` (imported lazily, so reading a config does not
import torch). Adding a task adds a folder under ``tasks/`` and a line in the registry; it edits neither
the trainer nor the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterable

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
    """Key of ``evaluate()``'s result maximised on val to keep the best model (never on test)."""
    metric_label: ClassVar[str] = ""
    """How the selection metric reads in messages ('accuracy', 'overall accuracy', 'R@1 sum', 'CIDEr')."""

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

    def evaluate(self, model: "nn.Module", batches: Iterable[dict[str, Any]], device: "torch.device") -> dict[str, Any]:
        """Every rank calls it with its exactly-once share of the split (ranks may get different numbers of
        batches: no collective inside the batch loop). Returns the same dict on every rank: flat scalars
        (float, int or None) written to metrics.jsonl, including ``selection_metric``, ``samples`` (clips
        scored) and ``skipped`` (clips the loader could not decode); nested values (tables, examples) are
        allowed and kept in result.json, except ``outputs`` (a task's per-sample outputs, e.g. every caption):
        the final evaluation writes it to ``RUN/outputs_<split>.json`` instead."""
        raise NotImplementedError

    def signature(self) -> dict[str, Any]:
        """Settings of this task a checkpoint is bound to besides the model's (e.g. the head's sizes, the
        vocabulary's hash), as plain JSON values: a resume with other values is refused. Keys are dotted
        config names ('avqa.lstm_hidden')."""
        return {}

    def baselines(self, split: str) -> dict[str, Any]:
        """Model-free reference figures on ``split`` from the manifest/shards (majority class, most frequent
        answer per question kind, most frequent caption), same keys as ``evaluate``; {} when none."""
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
