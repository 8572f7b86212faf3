"""LAVisH's AVQA head: the AVST design of the MUSIC-AVQA paper (Li et al., CVPR 2022), on our encoder's tokens.

Per video (the encoder runs once per video, every question of the batch reuses its tokens):
  audio    = fc_a2(relu(proj_a(audio CLS)))                                  (V, T, H)
  patches  = normalise(proj_v(visual patch tokens))                          (V, T, N, H)
  grounded = softmax_n(cos(audio, patch_n)) @ patches       audio-guided spatial grounding
  visual   = fc_gl(tanh([proj_v(visual CLS), grounded]))                     (V, T, H)
Per question q of video v = video_index[q]:
  question = LSTM encoder (embedding, tanh, LSTM, [h, c], tanh, fc)          (Q, H)
  a_att, v_att = question-as-query attention (4 heads) over v's T segments, each + FFN, LayerNorm
  logits   = fc_ans(tanh(fc_fusion(tanh([a_att + mean_t audio, v_att + mean_t visual])) * question))
Optional frame matching (loss weight 0.5 in the reference): per segment, an MLP classifies (audio, grounded
visual) of the same video (positive) against the audio with another video's visual tokens (negative).

Deviation from the reference: its Swin backbone has no CLS token, so it average-pools the patch grid for the
global visual feature; our ViT's visual CLS plays that part.

Input standardisation (ours, before the above): the tokens of a frozen random-init ViT share one large
component (measured on the embedded set: mean cosine 0.95 between different videos' visual CLS, the common
vector ~5x the per-video residual), which the head learns around only slowly. Each input (audio CLS,
visual CLS, visual patches) can go through ``FeatureStandardise`` (``avqa.standardise``): a per-channel shift and scale, initialised
from the first training batch's mean and std (ActNorm's data-dependent init, Kingma & Dhariwal 2018; the
statistics are averaged over ranks), then held fixed; they are head parameters (no gradient reaches them),
so exports and resumes carry them; before that first batch it is the identity.

``AVQATaskHead`` is the module the model holds as ``head``: it reads the encoder's output (``EncoderOutput``:
per-segment CLS and patch tokens of each stream, after the ViT's final norm) and the batch's question fields.
In an ablation the absent stream's features are zeros, i.e. no information: audio-only gets zero visual CLS
and one zero patch per segment (so the grounding and the visual branch see a constant), visual-only gets a
zero audio CLS (the grounding then weighs the patches by a constant query).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from avpea_dist.datasets.musicavqa.release import UNKNOWN_ANSWER


@dataclass
class AVQAHeadConfig:
    dim: int = 768
    """Width D of the encoder's tokens (the backbone's embed_dim)."""
    vocab_size: int = 94
    """Question-word vocabulary size, padding and unknown included (MUSIC-AVQA train: 92 words + 2)."""
    num_answers: int = 42
    """Answer vocabulary size (MUSIC-AVQA train: 42)."""
    hidden: int = 512
    """Width of the head's features, question LSTM state included (512 in the reference)."""
    word_dim: int = 512
    """Question word embedding width (512 in the reference)."""
    heads: int = 4
    """Heads of the question-guided temporal attention (4 in the reference)."""
    dropout: float = 0.1
    """Dropout of the temporal attention and its feed-forward block (0.1 in the reference)."""
    match_weight: float = 0.0
    """Weight of the positive/negative frame-matching loss (0.5 in the reference); 0 builds no matching MLP."""
    standardise: bool = False
    """Pass the three inputs through ``FeatureStandardise`` (not in the reference; for random-init backbones)."""


@dataclass
class AVQAOutput:
    logits: torch.Tensor
    """(Q, num_answers) answer scores, one row per question."""
    match_logits: torch.Tensor | None
    """(2 * V * T, 2) matching scores, positives then negatives (label 1 then 0); None without matching or
    with fewer than two videos in the batch (no other video to draw negatives from)."""


class QuestionEncoder(nn.Module):
    """Token ids (Q, L) -> (Q, hidden): embedding, tanh, one-layer LSTM, tanh([h, c]), linear (the reference's
    QstEncoder; like it, the LSTM also reads the padding at the end of shorter questions)."""

    def __init__(self, vocab_size: int, word_dim: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim)
        self.lstm = nn.LSTM(word_dim, hidden, num_layers=1, batch_first=True)
        self.fc = nn.Linear(2 * hidden, hidden)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _, (h, c) = self.lstm(torch.tanh(self.embed(tokens)))
        return self.fc(torch.tanh(torch.cat([h[-1], c[-1]], dim=-1)))


class TemporalAttention(nn.Module):
    """The question attends over a stream's segments, then a residual feed-forward block and LayerNorm."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden))
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, query: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        """query (Q, H), segments (Q, T, H) -> (Q, H)."""
        x = self.attn(query.unsqueeze(1), segments, segments, need_weights=False)[0].squeeze(1)
        return self.norm(x + self.drop(self.ffn(x)))


class FeatureStandardise(nn.Module):
    """(..., D) -> (x - shift) * scale per channel; shift/scale set from the first training batch (identity
    until then), then held. A channel that is constant there (an ablation's zeros) keeps scale 1."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(dim))
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self._is_identity():
            self._initialise(x.detach().flatten(0, -2))
        # Held at their initial values: learnt, they drifted and cost ~3 Audio-Visual points (measured on
        # cached features, docs/avqa.md). They stay parameters so that exports and checkpoints carry them; with
        # no gradient reaching them, AdamW leaves them where they are.
        return (x - self.shift.detach()) * self.scale.detach()

    def _is_identity(self) -> bool:
        return bool((self.shift == 0).all() and (self.scale == 1).all())

    @torch.no_grad()
    def _initialise(self, x: torch.Tensor) -> None:
        stats = torch.stack([x.double().mean(0), (x.double() ** 2).mean(0)])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Every rank must start from the same values (the engine only syncs gradients from here on).
            torch.distributed.all_reduce(stats)
            stats /= torch.distributed.get_world_size()
        mean, std = stats[0], (stats[1] - stats[0] ** 2).clamp_min(0).sqrt()
        self.shift.copy_(mean.to(self.shift.dtype))
        self.scale.copy_(torch.where(std > 1e-6, 1.0 / std.clamp_min(1e-6), torch.ones_like(std)).to(self.scale.dtype))


class AVQAHead(nn.Module):
    def __init__(self, cfg: AVQAHeadConfig) -> None:
        super().__init__()
        if cfg.hidden % cfg.heads:
            raise ValueError(f"head hidden {cfg.hidden} must be divisible by heads {cfg.heads}")
        if cfg.match_weight < 0:
            raise ValueError(f"match_weight {cfg.match_weight} must be >= 0 (0 turns frame matching off)")
        self.cfg = cfg
        h = cfg.hidden
        self.std_a, self.std_v, self.std_p = ((FeatureStandardise(cfg.dim) if cfg.standardise else nn.Identity())
                                              for _ in range(3))
        self.proj_a, self.fc_a2 = nn.Linear(cfg.dim, h), nn.Linear(h, h)
        self.proj_v = nn.Linear(cfg.dim, h)
        self.fc_gl = nn.Linear(2 * h, h)
        self.question = QuestionEncoder(cfg.vocab_size, cfg.word_dim, h)
        self.attn_a = TemporalAttention(h, cfg.heads, cfg.dropout)
        self.attn_v = TemporalAttention(h, cfg.heads, cfg.dropout)
        self.fc_fusion = nn.Linear(2 * h, h)
        self.fc_ans = nn.Linear(h, cfg.num_answers)
        self.match = None
        if cfg.match_weight > 0:
            self.match = nn.Sequential(nn.Linear(2 * h, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                                       nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 2))

    def audio_features(self, audio_cls: torch.Tensor) -> torch.Tensor:
        return self.fc_a2(F.relu(self.proj_a(audio_cls)))

    def grounded_visual(self, audio: torch.Tensor, visual_cls: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """audio (V, T, H), visual CLS (V, T, D), patches (V, T, N, D) -> (V, T, H)."""
        p = F.normalize(self.proj_v(patches), dim=-1)
        a = F.normalize(audio, dim=-1)
        weights = torch.softmax(torch.einsum("vtnh,vth->vtn", p, a), dim=-1)
        grounded = torch.einsum("vtn,vtnh->vth", weights, p)
        return self.fc_gl(torch.tanh(torch.cat([self.proj_v(visual_cls), grounded], dim=-1)))

    def forward(self, audio_cls: torch.Tensor, visual_cls: torch.Tensor, visual_patches: torch.Tensor,
                questions: torch.Tensor, video_index: torch.Tensor) -> AVQAOutput:
        """audio_cls, visual_cls (V, T, D); visual_patches (V, T, N, D); questions (Q, L) token ids;
        video_index (Q,) the video of each question, in [0, V)."""
        _check_inputs(audio_cls, visual_cls, visual_patches, questions, video_index, self.cfg.dim)
        audio_cls, visual_cls = self.std_a(audio_cls), self.std_v(visual_cls)
        visual_patches = self.std_p(visual_patches)
        audio = self.audio_features(audio_cls)
        visual = self.grounded_visual(audio, visual_cls, visual_patches)
        q = self.question(questions)
        a_q, v_q = audio[video_index], visual[video_index]  # (Q, T, H): each question sees its own video
        a_att = self.attn_a(q, a_q) + a_q.mean(dim=1)
        v_att = self.attn_v(q, v_q) + v_q.mean(dim=1)
        fused = self.fc_fusion(torch.tanh(torch.cat([a_att, v_att], dim=-1)))
        logits = self.fc_ans(torch.tanh(fused * q))
        return AVQAOutput(logits, self._match_logits(audio, visual, visual_cls, visual_patches))

    def _match_logits(self, audio: torch.Tensor, visual: torch.Tensor, visual_cls: torch.Tensor,
                      patches: torch.Tensor) -> torch.Tensor | None:
        if self.match is None or audio.shape[0] < 2:
            return None
        # Negatives: each video's audio with the next video's visual tokens (a deterministic stand-in for
        # the reference's random frames of other videos, so a resumed run sees the same pairs).
        other = torch.roll(torch.arange(audio.shape[0], device=audio.device), -1)
        negative = self.grounded_visual(audio, visual_cls[other], patches[other])
        pairs = torch.cat([torch.cat([audio, visual], dim=-1), torch.cat([audio, negative], dim=-1)])
        return self.match(pairs.flatten(0, 1))


class AVQATaskHead(nn.Module):
    """``head(enc, batch) -> AVQAOutput``: the AVST head on the shared encoder's tokens, one encoder pass per
    video; ``batch['questions']`` (Q, L) and ``batch['question_video']`` (Q,) pick each question's video."""

    def __init__(self, cfg: AVQAHeadConfig) -> None:
        super().__init__()
        self.avst = AVQAHead(cfg)

    def forward(self, enc: Any, batch: dict[str, Any]) -> AVQAOutput:
        weight = self.avst.proj_a.weight
        audio_cls, visual_cls, patches = stream_tokens(enc, self.avst.cfg.dim)
        questions = batch["questions"].to(weight.device, non_blocking=True)
        video_index = batch["question_video"].to(weight.device, non_blocking=True)
        return self.avst(audio_cls.to(weight.dtype), visual_cls.to(weight.dtype), patches.to(weight.dtype),
                         questions, video_index)


def stream_tokens(enc: Any, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(audio CLS, visual CLS, visual patches) of an ``EncoderOutput``; an absent stream becomes zeros."""
    present = tuple(enc.streams)
    ref = enc.cls(present[0])
    zeros = ref.new_zeros(ref.shape[:2] + (dim,))
    audio_cls = enc.cls("a") if "a" in present else zeros
    if "v" in present:
        return audio_cls, enc.cls("v"), enc.patches("v")
    return audio_cls, zeros, zeros.unsqueeze(2)


def _check_inputs(audio_cls: torch.Tensor, visual_cls: torch.Tensor, patches: torch.Tensor,
                  questions: torch.Tensor, video_index: torch.Tensor, dim: int) -> None:
    V, T = audio_cls.shape[:2]
    if audio_cls.shape != (V, T, dim) or visual_cls.shape != (V, T, dim):
        raise ValueError(f"audio CLS {tuple(audio_cls.shape)} and visual CLS {tuple(visual_cls.shape)} must both "
                         f"be (videos, segments, {dim})")
    if patches.dim() != 4 or patches.shape[:2] != (V, T) or patches.shape[3] != dim:
        raise ValueError(f"visual patches {tuple(patches.shape)} must be ({V}, {T}, patches, {dim})")
    if questions.dim() != 2 or video_index.shape != (questions.shape[0],):
        raise ValueError(f"questions {tuple(questions.shape)} must be (Q, L) with video_index (Q,), "
                         f"got video_index {tuple(video_index.shape)}")
    if video_index.numel() and (int(video_index.min()) < 0 or int(video_index.max()) >= V):
        raise ValueError(f"video_index values must lie in [0, {V}), got {video_index.tolist()}")


def match_labels(match_logits: torch.Tensor) -> torch.Tensor:
    """Positives (the first half) are 1, negatives 0."""
    half = match_logits.shape[0] // 2
    return torch.cat([torch.ones(half), torch.zeros(half)]).long().to(match_logits.device)


def avqa_loss(out: AVQAOutput, labels: torch.Tensor, match_weight: float = 0.0) -> torch.Tensor:
    """Cross-entropy over answers (an UNKNOWN_ANSWER label is left out) plus match_weight times the
    matching cross-entropy when the batch had matching scores."""
    known = labels != UNKNOWN_ANSWER
    # A batch of unknown answers only (possible on val/test) gives 0, not the NaN of a mean over nothing.
    loss = (F.cross_entropy(out.logits.float()[known], labels[known]) if bool(known.any())
            else out.logits.float().sum() * 0.0)
    if match_weight > 0 and out.match_logits is not None:
        loss = loss + match_weight * F.cross_entropy(out.match_logits.float(), match_labels(out.match_logits))
    return loss
