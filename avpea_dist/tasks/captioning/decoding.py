"""Caption decoding: greedy and beam search over any next-token model, batched over clips.

Both take ``step(tokens, clips) -> log_probs``: ``tokens`` (b, R, t) int64 are R running prefixes for each of
the b clips listed in ``clips`` (b,) (indices into the batch the caller prepared memory for); the result is
(b, R, V) log-probabilities of the next token. Clips that have finished leave the batch, so late steps cost
only what is still open. A sequence starts with ``bos`` and ends at ``eos`` or after ``max_len`` tokens in all
(bos and eos included, as in training); the returned token lists hold neither.

Beam search keeps exactly ``beam`` live prefixes per clip. Each step ranks the 2 x beam best extensions; an
extension by ``eos`` ranked among the first ``beam`` closes a hypothesis, scored sum(log p) /
length ** length_penalty (length = generated tokens, eos included); the others refill the beam. A clip stops
when it holds ``beam`` closed hypotheses (Hugging Face's ``early_stopping=True``), or at ``max_len``, where its
live prefixes close as they are. With ``beam=1`` this is greedy decoding, step for step (a test checks it).
"""

from __future__ import annotations

from typing import Callable

import torch

StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def greedy(step: StepFn, batch: int, *, bos: int, eos: int, max_len: int, device: torch.device | None = None
           ) -> list[list[int]]:
    """The most probable next token at every step, per clip."""
    _check(batch, max_len, 1)
    out: list[list[int]] = [[] for _ in range(batch)]
    tokens = torch.full((batch, 1, 1), bos, dtype=torch.int64, device=device)
    clips = torch.arange(batch, device=device)
    for _ in range(max_len - 1):
        nxt = step(tokens, clips)[:, 0].argmax(-1)  # (b,)
        ended = nxt == eos
        for c, tok, end in zip(clips.tolist(), nxt.tolist(), ended.tolist()):
            if not end:
                out[c].append(tok)
        keep = ~ended
        tokens = torch.cat([tokens, nxt.view(-1, 1, 1)], dim=-1)[keep]
        clips = clips[keep]
        if clips.numel() == 0:
            break
    return out


def beam_search(step: StepFn, batch: int, *, bos: int, eos: int, max_len: int, beam: int,
                length_penalty: float = 1.0, device: torch.device | None = None) -> list[list[int]]:
    """The best closed hypothesis of a beam of width ``beam`` per clip (see the module docstring)."""
    _check(batch, max_len, beam)
    closed: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    tokens = torch.full((batch, beam, 1), bos, dtype=torch.int64, device=device)
    scores = torch.full((batch, beam), float("-inf"), dtype=torch.float64)
    scores[:, 0] = 0.0  # all beams start equal: only the first may extend, or the beam fills with copies
    clips = torch.arange(batch, device=device)
    for length in range(1, max_len):
        logp = step(tokens, clips).double().cpu()  # (b, K, V)
        vocab = logp.shape[-1]
        top, idx = (scores[:, :, None] + logp).flatten(1).topk(min(2 * beam, beam * vocab), dim=1)
        last = length == max_len - 1
        keep_rows, new_tokens, new_scores = [], [], []
        for row, clip in enumerate(clips.tolist()):
            live: list[tuple[int, int, float]] = []
            for rank, (score, flat) in enumerate(zip(top[row].tolist(), idx[row].tolist())):
                if score == float("-inf"):
                    break
                src, tok = divmod(flat, vocab)
                if tok == eos:
                    if rank < beam:
                        prefix = tokens[row, src, 1:].tolist()
                        closed[clip].append((score / length ** length_penalty, prefix))
                elif len(live) < beam:
                    live.append((src, tok, score))
            if last:  # out of room: live prefixes close as they are
                for src, tok, score in live:
                    closed[clip].append((score / length ** length_penalty, tokens[row, src, 1:].tolist() + [tok]))
            if len(closed[clip]) >= beam or last or not live:
                continue
            live += [live[-1][:2] + (float("-inf"),)] * (beam - len(live))  # pad with dead copies
            keep_rows.append(row)
            src_idx = torch.tensor([s for s, _, _ in live], device=tokens.device)
            tok_col = torch.tensor([t for _, t, _ in live], device=tokens.device).view(-1, 1)
            new_tokens.append(torch.cat([tokens[row, src_idx], tok_col], dim=-1))
            new_scores.append(torch.tensor([s for _, _, s in live], dtype=torch.float64))
        if not keep_rows:
            break
        tokens, scores = torch.stack(new_tokens), torch.stack(new_scores)
        clips = clips[torch.tensor(keep_rows, device=clips.device)]
    return [max(hyps, key=lambda h: h[0])[1] if hyps else [] for hyps in closed]


def decode(step: StepFn, batch: int, *, bos: int, eos: int, max_len: int, beam: int, length_penalty: float = 1.0,
           device: torch.device | None = None) -> list[list[int]]:
    """Beam search of width ``beam``; greedy (the same result, cheaper) when ``beam`` is 1."""
    if beam == 1:
        return greedy(step, batch, bos=bos, eos=eos, max_len=max_len, device=device)
    return beam_search(step, batch, bos=bos, eos=eos, max_len=max_len, beam=beam, length_penalty=length_penalty,
                       device=device)


def sequence_logprob(step: StepFn, tokens: list[int], *, bos: int, eos: int) -> float:
    """sum(log p) of ``tokens`` followed by ``eos`` for clip 0 under ``step`` (what beam search maximises)."""
    seq = [bos] + list(tokens) + [eos]
    total = 0.0
    for t in range(1, len(seq)):
        prefix = torch.tensor(seq[:t], dtype=torch.int64).view(1, 1, -1)
        total += float(step(prefix, torch.zeros(1, dtype=torch.int64))[0, 0, seq[t]])
    return total


def _check(batch: int, max_len: int, beam: int) -> None:
    if batch < 0 or max_len < 2 or beam < 1:
        raise ValueError(f"decoding needs batch >= 0, max_len >= 2 (bos + eos), beam >= 1; got batch={batch}, "
                         f"max_len={max_len}, beam={beam}")
