"""Typed, nested run configuration.

Defaults and checks live here; ``config_load.py`` reads a YAML file in ``configs/`` over them, then dotted
CLI overrides (``model.bottleneck=64``). Every user error is a ``ValueError`` (or its subclass
``ConfigError``) that names the key and what is allowed. YAML is read with ``yaml.safe_load`` only.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, RefusedOnRankZero  # noqa: F401 (re-exported: most modules import them from here)
from .errors import check_choice as _choice, check_positive as _positive
from .plugins import task_spec, task_specs

# Settings a resume from a checkpoint may change only when the user says so (train.allow_resume_changes):
# each breaks the exact continuation (data order, batch composition, inputs, objective). 'data' stands for
# the shards' content (a fingerprint of the manifest's shard hashes), not the folder's path.
RESUME_OVERRIDABLE = ("data", "data.global_batch", "data.batch_size", "data.epoch_batches", "data.shuffle_buffer",
                      "optim.grad_accum",
                      "train.seed", "model.pretrained", "model.img_size",
                      "model.mel_bins", "model.audio_frames", "model.num_segments", "model.adapter_activation")




@dataclass
class ModelConfig:
    backbone: str = "vit_large_patch16_224.augreg_in21k"
    """timm model name of the frozen ViT shared by both streams (any timm VisionTransformer with a CLS token)."""
    pretrained: str = "timm"
    """Backbone weights: 'none' (random init, warned loudly), 'timm' (hub download) or a local file path
    (.safetensors, or a torch file read with weights_only=True)."""
    img_size: int = 224
    """Side of the square video frame fed to the ViT, in pixels (a multiple of the patch size)."""
    mel_bins: int = 128
    """Mel bins of the audio log-mel "image" (its height)."""
    audio_frames: int = 102
    """Fbank frames per one-second segment (its width); LAVisH uses 102."""
    num_segments: int = 10
    """One-second segments per clip."""
    adapters: bool = True
    """False trains the head alone on frozen features (linear-probe ablation)."""
    modalities: str = "av"
    """Streams that enter the model: 'av' (both, fused by AV-PEA), 'audio' or 'visual' (ablations)."""
    bottleneck: int = 0
    """Adapter bottleneck width r; 0 means D/8 (128 for ViT-L)."""
    adapter_placement: str = "mlp"
    """Where the adapter branch sits in each block: parallel to the 'mlp', to the 'attn', or 'both'
    (two adapters per block per stream, doubling the parameters)."""
    adapter_activation: str = "gelu"
    """Bottleneck non-linearity: 'gelu', 'relu' or 'silu'."""
    adapter_gate: str = "scalar"
    """How the adapter joins the residual stream at init-zero: 'scalar' (one learned gate, 0 at init),
    'vector' (a per-channel gate, 0 at init) or 'zero_up' (no gate; up-projection initialised to 0)."""
    adapter_norm: bool = True
    """A trainable LayerNorm on the adapter's inputs (both streams' tokens) before the down-projection."""
    adapter_heads: int = 1
    """Heads of the CLS cross-attention inside the bottleneck (must divide the bottleneck width)."""
    backbone_dtype: str = "auto"
    """Storage dtype of the frozen backbone: 'auto' (bf16 when training in bf16, else fp32), 'fp32', 'bf16'."""
    fuse_streams: bool = True
    """Run both streams through each frozen block in one call (audio padded to the visual token count)."""
    compile: bool = False
    """torch.compile the model (GPU speed; off on CPU by default)."""
    train_backbone_norms: bool = False
    """Also train the frozen ViT's LayerNorms (every block's norm1/norm2 and the final norm), as LAVisH's
    ViT recipe does (its ``is_vit_ln=1``); they join the adapters' learning rate, checkpoints and exports."""

    def __post_init__(self) -> None:
        _choice("model.modalities", self.modalities, ("av", "audio", "visual"))
        _choice("model.adapter_placement", self.adapter_placement, ("mlp", "attn", "both"))
        _choice("model.adapter_activation", self.adapter_activation, ("gelu", "relu", "silu"))
        _choice("model.adapter_gate", self.adapter_gate, ("scalar", "vector", "zero_up"))
        _choice("model.backbone_dtype", self.backbone_dtype, ("auto", "fp32", "bf16"))
        _positive("model.bottleneck", self.bottleneck, zero_ok=True)
        for name in ("img_size", "mel_bins", "audio_frames", "num_segments", "adapter_heads"):
            _positive(f"model.{name}", getattr(self, name))
        if self.bottleneck and self.bottleneck % self.adapter_heads:
            raise ConfigError(f"model.adapter_heads={self.adapter_heads} must divide "
                              f"model.bottleneck={self.bottleneck}")
        if not self.backbone:
            raise ConfigError("model.backbone is empty; give a timm ViT name such as 'vit_tiny_patch16_224'")


@dataclass
class DataConfig:
    shards: str = ""
    """Folder holding manifest.json and the split shards written by `avpea shards build` (required to train)."""
    batch_size: int = 8
    """Clips per rank per micro-step (each clip is num_segments segments). With data.global_batch set it is the
    cap: each rank's micro-batch is the largest divisor of global_batch / world size that is <= batch_size, and
    the accumulation steps make up the rest (optim.grad_accum is then derived, not read)."""
    global_batch: int = 0
    """Clips per optimizer step over all ranks and accumulation steps: the run's unit, the same at every world
    size (the epoch's order and each global batch's samples depend on train.seed and the epoch only). 0 (configs
    from before it existed): world size x data.batch_size x optim.grad_accum of the run's first start."""
    num_workers: int = 4
    """Loader worker processes per rank (0 decodes in the training process)."""
    shuffle_buffer: int = 500
    """Raw (undecoded) samples held for shuffling per worker."""
    epoch_batches: int = 0
    """Global batches (optimizer steps' worth of clips) per virtual epoch; 0: one pass over the train split,
    train samples // data.global_batch (the at most global_batch - 1 left over differ every epoch)."""
    max_bad_fraction: float = 0.01
    """Share of corrupt samples a rank may skip before the run stops with an error."""
    cache_dir: str = ""
    """Node-local folder caching whole shards read from s3:// or http(s):// (shared by the node's ranks and
    workers; least recently used evicted); '' reads every byte from the store each time."""
    cache_bytes: int = 0
    """Size bound of data.cache_dir in bytes; 0 = unbounded."""
    storage_retries: int = 5
    """Retries of one failed request to s3:// or http(s):// (reset, timeout, 5xx, 503 SlowDown) before the
    run stops with an error naming the URL."""
    storage_backoff_s: float = 0.5
    """First wait before a retry; doubled each retry (capped at 20 s) and drawn at random below (jitter)."""
    storage_timeout_s: float = 60.0
    """Connect/read timeout of one request to remote storage: a stalled store counts as a failed attempt."""
    storage_signed_reads: bool = True
    """Read s3:// sample ranges as presigned GETs over plain HTTP (a third of botocore's CPU per request, spent
    in the loader worker beside its decoding; URLs signed in memory, never printed); false: through s3fs."""
    sampling: str = "sequential"
    """Which train samples an epoch reads: 'sequential' (each once, in a seeded order) or 'balanced' (drawn with
    replacement, weighted by the sum of 1 / label frequency over each sample's labels, as AudioSet recipes do;
    needs shards whose index has labels: VGGSound, AudioSet)."""
    epoch_samples: int = 0
    """Samples per 'balanced' epoch across all ranks; 0: as many as the train split holds."""

    def __post_init__(self) -> None:
        if self.sampling not in ("sequential", "balanced"):
            raise ConfigError(f"data.sampling={self.sampling!r} must be 'sequential' or 'balanced'")
        _positive("data.epoch_samples", self.epoch_samples, zero_ok=True)
        _positive("data.batch_size", self.batch_size)
        _positive("data.num_workers", self.num_workers, zero_ok=True)
        _positive("data.shuffle_buffer", self.shuffle_buffer)
        _positive("data.epoch_batches", self.epoch_batches, zero_ok=True)
        _positive("data.global_batch", self.global_batch, zero_ok=True)
        if not 0 <= self.max_bad_fraction <= 1:
            raise ConfigError(f"data.max_bad_fraction={self.max_bad_fraction} must lie in [0, 1]")
        _positive("data.cache_bytes", self.cache_bytes, zero_ok=True)
        _positive("data.storage_retries", self.storage_retries, zero_ok=True)
        _positive("data.storage_backoff_s", self.storage_backoff_s, zero_ok=True)
        _positive("data.storage_timeout_s", self.storage_timeout_s)


@dataclass
class OptimConfig:
    lr_adapter: float = 5e-4
    """Peak AdamW learning rate of the adapters."""
    lr_head: float = 5e-4
    """Peak AdamW learning rate of the task head (the peers use a separate rate for it)."""
    weight_decay: float = 0.01
    """AdamW weight decay on matrices (never on biases, norms or gates)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    warmup_steps: int = 100
    """Linear warm-up optimizer steps before cosine decay."""
    min_lr_ratio: float = 0.01
    """Final learning rate as a fraction of the peak."""
    grad_clip: float = 1.0
    """Global gradient-norm clip; 0 disables clipping."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""

    def __post_init__(self) -> None:
        _positive("optim.lr_adapter", self.lr_adapter, zero_ok=True)
        _positive("optim.lr_head", self.lr_head, zero_ok=True)
        _positive("optim.weight_decay", self.weight_decay, zero_ok=True)
        _positive("optim.eps", self.eps)
        _positive("optim.warmup_steps", self.warmup_steps, zero_ok=True)
        _positive("optim.grad_clip", self.grad_clip, zero_ok=True)
        _positive("optim.grad_accum", self.grad_accum)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas={self.betas} must be two numbers in [0, 1)")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"optim.min_lr_ratio={self.min_lr_ratio} must lie in [0, 1]")


@dataclass
class TrainConfig:
    out: str = ""
    """Run folder: config, metrics, TensorBoard events and checkpoints land here ('' means runs/<task>)."""
    steps: int = 5000
    """Optimizer steps in the whole run."""
    eval_every: int = 500
    """Evaluate on val (and keep the best model) every this many steps."""
    log_every: int = 10
    """Write a metrics line every this many steps."""
    log_samples: bool = False
    """Record which samples each optimizer step saw: rank 0 appends one line per step to
    RUN/samples/epoch_<e>.jsonl ({epoch, step, world_size, keys: the global batch's sample keys, sorted});
    `avpea run samples RUN --check` reads them."""
    ckpt_every: int = 500
    """Save a resumable checkpoint every this many steps (also at every evaluation)."""
    keep_checkpoints: int = 2
    """Newest complete checkpoints kept (the best one is kept besides)."""
    resume: str = "latest"
    """'latest' continues from the newest complete checkpoint in the run folder, 'none' starts afresh
    (refusing a folder that has checkpoints), or a checkpoint folder path."""
    seed: int = 0
    """Seed of initialisation, data order and augmentation."""
    deterministic: bool = False
    """Deterministic kernels (bit-exact resume on CPU)."""
    max_skipped_steps: int = 5
    """Consecutive steps with a non-finite loss or gradient tolerated before the run stops."""
    progress: bool = True
    """Show a progress bar on rank 0."""
    loggers: list[str] = field(default_factory=lambda: ["tensorboard"])
    """Experiment trackers fed every metrics line besides metrics.jsonl: any of tensorboard, wandb, mlflow
    (each imported only when named; W&B and MLflow read their settings and credentials from their own
    environment variables, e.g. WANDB_MODE, MLFLOW_TRACKING_URI). [] writes metrics.jsonl only."""
    tracker_project: str = ""
    """The W&B project and MLflow experiment runs are logged to ('' means avpea-<task>); the run is named
    after its folder."""
    epochs: int = 0
    """When > 0, the run length in passes over the training split; it replaces train.steps with
    epochs * epoch_batches (global batches per epoch), so a run means the same on 1 GPU and on 32.
    eval_every, ckpt_every and log_every still count optimizer steps."""
    allow_resume_changes: list[str] = field(default_factory=list)
    """Settings a resume may change although the run then differs from an uninterrupted one, e.g.
    [data.batch_size, train.seed]. Allowed: data (the shards' content), data.global_batch, data.batch_size,
    data.epoch_batches, data.shuffle_buffer, optim.grad_accum, train.seed, model.pretrained, model.img_size,
    model.mel_bins, model.audio_frames, model.num_segments, model.adapter_activation, and the keys the task's
    spec allows (e.g. avel.loss)."""

    def __post_init__(self) -> None:
        for name in ("steps", "eval_every", "log_every", "ckpt_every", "keep_checkpoints", "max_skipped_steps"):
            _positive(f"train.{name}", getattr(self, name))
        _positive("train.epochs", self.epochs, zero_ok=True)
        for name in self.loggers:
            _choice("train.loggers", name, ("tensorboard", "wandb", "mlflow"))

    def total_steps(self, epoch_batches: int, grad_accum: int) -> int:
        """Optimizer steps of the run: train.steps, or the epochs' worth of steps when train.epochs > 0."""
        if self.epochs <= 0:
            return self.steps
        if epoch_batches <= 0:
            raise ConfigError(f"train.epochs={self.epochs} but an epoch has no whole batch per rank (the train "
                              f"split is smaller than ranks x data.batch_size); lower data.batch_size or use "
                              f"train.steps with train.epochs=0")
        return math.ceil(self.epochs * epoch_batches / grad_accum)


@dataclass
class EvalConfig:
    batch_size: int = 16
    """Clips per rank per evaluation batch."""
    final_split: str = "test"
    """Split evaluated once, with the best-on-val checkpoint, at the end of training."""

    def __post_init__(self) -> None:
        _positive("eval.batch_size", self.batch_size)
        _choice("eval.final_split", self.final_split, ("test", "val", "none"))


@dataclass
class DistConfig:
    backend: str = "auto"
    """Process-group backend: 'auto' (nccl with CUDA, gloo otherwise), 'nccl' or 'gloo'."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage (0, 1 or 2) for the trainable parameters."""
    precision: str = "auto"
    """'auto' (bf16 on GPU, fp32 on CPU), 'bf16' or 'fp32'."""
    timeout_s: int = 600
    """Collective timeout: a dead rank is detected within this many seconds."""

    def __post_init__(self) -> None:
        _choice("dist.backend", self.backend, ("auto", "nccl", "gloo"))
        _choice("dist.zero_stage", self.zero_stage, (0, 1, 2))
        _choice("dist.precision", self.precision, ("auto", "bf16", "fp32"))
        _positive("dist.timeout_s", self.timeout_s)


@dataclass
class Config:
    task: str = ""
    """Task trained: the name of a registered task (avpea_dist/tasks/<name>/, or an installed plug-in); its
    own settings are the section of the same name (``avqa:``, ``retrieval:``...)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The frozen backbone and the AV-PEA adapters: the encoder every task shares."""
    data: DataConfig = field(default_factory=DataConfig)
    """Shards and the streaming loader."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and schedule."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The step loop, the run folder and checkpoints."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation and model selection."""
    dist: DistConfig = field(default_factory=DistConfig)
    """Distributed engine settings."""
    sections: dict[str, Any] = field(default_factory=dict)
    """Task sections by task name, each typed by its task's spec (``TaskSpec.section``); the active task's is
    filled with its defaults when absent. Read as attributes (``cfg.avqa``) or as ``cfg.task_section``.
    Not a YAML key: in a file each section is a top-level key named after its task."""

    def __post_init__(self) -> None:
        if not self.task:
            raise ConfigError(f"no task given; set 'task:' in the config to one of "
                              f"{', '.join(map(repr, task_specs()))}")
        spec = task_spec(self.task)
        for name, section in self.sections.items():
            other = task_spec(name)
            if other.section is None or not isinstance(section, other.section):
                raise ConfigError(f"section '{name}' must be a {getattr(other.section, '__name__', 'no section')}")
        if spec.section is not None and self.task not in self.sections:
            self.sections[self.task] = spec.section()
        if not self.train.out:
            self.train.out = f"runs/{self.task}"
        allowed = RESUME_OVERRIDABLE + spec.resume_overridable
        for name in self.train.allow_resume_changes:
            if name not in allowed:
                hint = difflib.get_close_matches(name, allowed, n=1, cutoff=0.5)
                raise ConfigError(f"train.allow_resume_changes: '{name}' cannot be allowed"
                                  f"{'; did you mean ' + repr(hint[0]) + '?' if hint else ''} (allowed: "
                                  f"{', '.join(allowed)}; a model change needs a new train.out)")

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: a task section by its task's name (cfg.avqa).
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            return sections[name]
        raise AttributeError(f"Config has no attribute or task section {name!r}")

    @property
    def task_section(self) -> Any:
        """The active task's section (None when its task has none)."""
        return self.sections.get(self.task)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: dataclasses.asdict(getattr(self, f.name)) if dataclasses.is_dataclass(getattr(self, f.name))
               else getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "sections"}
        out.update({name: dataclasses.asdict(section) for name, section in self.sections.items()})
        return out
