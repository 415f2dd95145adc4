"""Inference: run puzzles through up to N_sup supervision steps, with or without halting.

Two drivers give the same answers:
  infer         one batch; every row starts together. halt="none" runs all N_sup steps for
                every row (the reference protocol); "adaptive" stops a row at the first step
                whose halting score is > 0 and later steps skip it.
  infer_stream  continuous batching over any number of puzzles: a row leaves as soon as it
                halts (or reaches N_sup) and the next puzzle takes its slot, so the batch never
                computes for finished puzzles. The fast path for adaptive halting.

`infer_sampled` runs K trajectories per puzzle with Gaussian noise on the latent after every
supervision step and keeps the one the halting head trusts most (Probabilistic TRM, arXiv
2605.19943): an accuracy-for-compute knob that needs no retraining.

Both drivers support the DIS options: the step index passed to the model (time conditioning), feeding
the previous answer back as input (feedback="prediction"), and guided decoding
ℓ_w = ℓ_u + w·(ℓ_c − ℓ_u), where ℓ_c are the logits after the step and ℓ_u those of the answer
state before it (w = 1: plain decoding). Guidance changes what is read out and fed back, never
the latent state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .losses import IGNORE
from .recursion import halt_score


@dataclass
class Inference:
    """Result of running puzzles through their supervision steps."""

    tokens: torch.Tensor
    """[B, L] the answer read at each row's last step."""
    logits: torch.Tensor
    """[B, L, V] the (guided) logits of that step."""
    steps: torch.Tensor
    """[B] supervision steps used per row."""
    per_step: torch.Tensor
    """[S, B, L] the answer after every supervision step (frozen once a row halted)."""
    halt_score: torch.Tensor
    """[S, B] the halting score after every step (> 0: halt; frozen once a row halted)."""


def _step(model, state, tokens, puzzle_ids, step: int | torch.Tensor, act: str, prev, guidance: float):
    """One supervision step: (new state, decoded logits [b, L, V], raw logits, halting score [b])."""
    if isinstance(step, int):
        step = torch.full((tokens.shape[0],), step, dtype=torch.int32, device=tokens.device)
    state, out = model(state, tokens, puzzle_ids, step)
    raw = out.logits
    dec = raw if guidance == 1.0 else prev.float() + guidance * (raw.float() - prev.float())
    return state, dec, raw, halt_score(out, act)


def fed_back(inputs: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    """What the net reads next with feedback="prediction": the answer, PAD where the puzzle has PAD."""
    return torch.where(inputs == IGNORE, IGNORE, answer.to(inputs.dtype))


def initial_logits(model, B: int) -> torch.Tensor:
    """ℓ_u of the first step: the readout of the initial answer state, [B, L, V]."""
    return model.readout(model.init_state(1)[0]).logits.expand(B, -1, -1)


@torch.no_grad()
def infer(model, inputs: torch.Tensor, puzzle_ids: torch.Tensor, n_sup: int, halt: str = "none",
          act: str = "halt", feedback: str = "input", guidance: float = 1.0, threshold: float = 0.0,
          noise: float = 0.0, generator: torch.Generator | None = None) -> Inference:
    """One batch through N_sup supervision steps (see the module docstring); with halt="adaptive" a row stops
    once its halting score is > `threshold` (0: the trained decision; higher: later, more careful halting).
    `noise` > 0 adds N(0, noise^2) to the latent (the last state tensor, TRM's z) after every step."""
    B = inputs.shape[0]
    state = model.init_state(B)
    seen = inputs  # what the net reads as x
    prev = initial_logits(model, B) if guidance != 1.0 else None
    rows = torch.arange(B, device=inputs.device)  # rows still running
    steps = torch.zeros(B, dtype=torch.int32, device=inputs.device)
    tokens, score = torch.zeros_like(inputs), torch.zeros(B, device=inputs.device)
    logits = None
    per_step, score_per_step = [], []
    for s in range(1, n_sup + 1):
        if rows.numel() == B:  # nobody halted yet: no gather/scatter
            state, dec, raw, row_score = _step(model, state, seen, puzzle_ids, s, act, prev, guidance)
            logits, prev = dec, (raw if guidance != 1.0 else None)
        else:
            sub = tuple(t[rows] for t in state)
            sub, dec, raw, row_score = _step(model, sub, seen[rows], puzzle_ids[rows], s, act,
                                             prev[rows] if prev is not None else None, guidance)
            state = tuple(full.index_copy(0, rows, part) for full, part in zip(state, sub))
            logits = logits.index_copy(0, rows, dec.to(logits.dtype))
            prev = prev.index_copy(0, rows, raw) if guidance != 1.0 else None
        if noise:
            z = state[-1]
            z = z + noise * torch.randn(z.shape, generator=generator, device=z.device, dtype=torch.float32).to(z.dtype)
            state = state[:-1] + (z,)
        answer = dec.argmax(-1).to(tokens.dtype)
        tokens = tokens.index_copy(0, rows, answer)
        if feedback == "prediction":
            seen = fed_back(inputs, tokens)
        score = score.index_copy(0, rows, row_score)
        steps[rows] = s
        per_step.append(tokens)
        score_per_step.append(score)
        if halt == "adaptive":
            rows = rows[row_score <= threshold]
            if rows.numel() == 0:  # everyone halted: the remaining steps repeat the final answers
                per_step += [tokens] * (n_sup - s)
                score_per_step += [score] * (n_sup - s)
                break
    return Inference(tokens=tokens, logits=logits, steps=steps, per_step=torch.stack(per_step),
                     halt_score=torch.stack(score_per_step))


@torch.no_grad()
def infer_stream(model, inputs: torch.Tensor, puzzle_ids: torch.Tensor, n_sup: int, batch_size: int,
                 halt: str = "adaptive", act: str = "halt", feedback: str = "input",
                 guidance: float = 1.0, threshold: float = 0.0) -> Inference:
    """Every puzzle of `inputs` [N, L] (on the model's device) with continuous batching: up to `batch_size`
    puzzles run at once; one that halts (halt="adaptive") or reaches N_sup gives its slot to the next.
    Each puzzle gets the answer `infer` would give it; results come back in input order."""
    N, L = inputs.shape
    dev = inputs.device
    B = min(batch_size, N)
    slot = torch.arange(B, device=dev)  # the puzzle in each row
    nxt = B  # the next puzzle to start
    state = model.init_state(B)
    x, seen, pid = inputs[:B].clone(), inputs[:B].clone(), puzzle_ids[:B].clone()
    steps = torch.zeros(B, dtype=torch.int32, device=dev)
    init = initial_logits(model, 1) if guidance != 1.0 else None
    prev = init.expand(B, -1, -1).clone() if init is not None else None
    tokens, used = torch.zeros_like(inputs), torch.zeros(N, dtype=torch.int32, device=dev)
    per_step = torch.zeros((n_sup, N, L), dtype=inputs.dtype, device=dev)
    scores = torch.zeros((n_sup, N), device=dev)
    logits = None
    while slot.numel():
        state, dec, raw, score = _step(model, state, seen, pid, steps + 1, act, prev, guidance)
        steps += 1
        answer = dec.argmax(-1).to(inputs.dtype)
        per_step[steps.long() - 1, slot] = answer
        scores[steps.long() - 1, slot] = score.float()
        if feedback == "prediction":
            seen = fed_back(x, answer)
        prev = raw if guidance != 1.0 else None
        done = steps >= n_sup
        if halt == "adaptive":
            done |= score > threshold
        finished = done.nonzero().squeeze(1)
        if finished.numel() == 0:  # one host sync per step: the price of refilling rows
            continue
        if logits is None:
            logits = torch.zeros((N, L, dec.shape[-1]), dtype=dec.dtype, device=dev)
        ids = slot[finished]
        tokens[ids], used[ids], logits[ids] = answer[finished], steps[finished], dec[finished]
        take = finished[:max(0, min(finished.numel(), N - nxt))]  # rows that start a new puzzle
        keep = ~done
        if take.numel():
            new = torch.arange(nxt, nxt + take.numel(), device=dev)
            nxt += take.numel()
            slot[take], x[take], seen[take], pid[take], steps[take] = new, inputs[new], inputs[new], puzzle_ids[new], 0
            fresh = torch.zeros(slot.shape[0], dtype=torch.bool, device=dev)
            fresh[take] = True
            state = model.reset_state(state, fresh)
            if prev is not None:
                prev = torch.where(fresh.view(-1, 1, 1), init.to(prev.dtype), prev)
            keep = keep | fresh
        if not keep.all():  # no more puzzles for these rows: shrink the batch
            state = tuple(t[keep] for t in state)
            slot, x, seen, pid, steps = slot[keep], x[keep], seen[keep], pid[keep], steps[keep]
            prev = prev[keep] if prev is not None else None
    # after its last step a puzzle's answer and score stay as they were (as in `infer`)
    after = torch.arange(1, n_sup + 1, device=dev).view(-1, 1) > used.view(1, -1)  # [S, N]
    last = scores.gather(0, (used.long() - 1).view(1, -1))  # [1, N]
    return Inference(tokens=tokens, logits=logits, steps=used,
                     per_step=torch.where(after.unsqueeze(-1), tokens.unsqueeze(0), per_step),
                     halt_score=torch.where(after, last, scores))


@torch.no_grad()
def infer_sampled(model, inputs: torch.Tensor, puzzle_ids: torch.Tensor, n_sup: int, samples: int, noise: float,
                  act: str = "halt", feedback: str = "input", seed: int = 0) -> Inference:
    """K = `samples` trajectories per puzzle, all N_sup steps; trajectory 0 is noise-free, the others get
    N(0, noise^2) on the latent after every step. Each puzzle keeps the trajectory with the highest final
    halting score. Costs K times the net calls of `infer`."""
    B = inputs.shape[0]
    gen = torch.Generator(device=inputs.device).manual_seed(seed)
    runs = [infer(model, inputs, puzzle_ids, n_sup, "none", act, feedback)]
    runs += [infer(model, inputs, puzzle_ids, n_sup, "none", act, feedback, noise=noise, generator=gen)
             for _ in range(samples - 1)]
    best = torch.stack([r.halt_score[-1] for r in runs]).argmax(0)  # [B]
    rows = torch.arange(B, device=inputs.device)

    def pick(name: str, axis: int = 0):
        stacked = torch.stack([getattr(r, name) for r in runs])  # [K, ...]
        return stacked[best, rows] if axis == 0 else stacked[best, :, rows].transpose(0, 1)

    return Inference(tokens=pick("tokens"), logits=pick("logits"), steps=pick("steps"),
                     per_step=pick("per_step", 1), halt_score=pick("halt_score", 1))
