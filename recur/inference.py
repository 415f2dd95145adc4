"""Inference: run puzzles through up to N_sup supervision steps, with or without halting.

`infer` drives a recur.supervision.Carry of up to `batch_size` rows over any number of puzzles:
halt="none" runs all N_sup steps for every puzzle (the reference protocol); "adaptive" stops a
puzzle at the first step whose halting score is > `threshold` (0: the trained decision). A puzzle
that is done leaves its row and the next puzzle takes it (continuous batching); with `batch_size`
at least the number of puzzles every row starts together and the batch only shrinks. Both give
every puzzle the same answer, so the choice is one of speed.

`infer_sampled` runs K trajectories per puzzle with Gaussian noise on the latent after every
supervision step and keeps the one the halting head trusts most (Probabilistic TRM, arXiv
2605.19943): an accuracy-for-compute knob that needs no retraining.

The DIS options work throughout: the step index passed to the model (time conditioning), feeding
the previous answer back as input (feedback="prediction"), and guided decoding
ℓ_w = ℓ_u + w·(ℓ_c − ℓ_u), where ℓ_c are the logits after the step and ℓ_u those of the answer
state before it (w = 1: plain decoding). Guidance changes what is read out and fed back, never
the latent state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .supervision import Carry


@dataclass
class Inference:
    """Result of running puzzles through their supervision steps."""

    tokens: torch.Tensor
    """[N, L] the answer read at each puzzle's last step."""
    logits: torch.Tensor
    """[N, L, V] the (guided) logits of that step."""
    steps: torch.Tensor
    """[N] supervision steps used per puzzle."""
    per_step: torch.Tensor
    """[S, N, L] the answer after every supervision step (frozen once a puzzle halted)."""
    halt_score: torch.Tensor
    """[S, N] the halting score after every step (> 0: halt; frozen once a puzzle halted)."""


def initial_logits(model, B: int) -> torch.Tensor:
    """ℓ_u of the first step: the readout of the initial answer state, [B, L, V]."""
    return model.readout(model.init_state(1)[0]).logits.expand(B, -1, -1)


Trace = Callable[[torch.Tensor, torch.Tensor, list], None]
"""trace(puzzles [b], steps [b], readouts): after each supervision step, which puzzles its rows hold, the step
each has reached, and the model's readout (a recur.recursion.StepOutput) after every answer update of it."""


@torch.no_grad()
def infer(model, inputs: torch.Tensor, puzzle_ids: torch.Tensor, n_sup: int, halt: str = "none", act: str = "halt",
          feedback: str = "input", guidance: float = 1.0, threshold: float = 0.0, batch_size: int | None = None,
          noise: float = 0.0, generator: torch.Generator | None = None, trace: Trace | None = None) -> Inference:
    """Every puzzle of `inputs` [N, L] (on the model's device), at most `batch_size` (default N) at a time, through
    up to N_sup supervision steps (see the module docstring); results come back in input order. `noise` > 0 adds
    N(0, noise^2) to the latent (the last state tensor, TRM's z) after every step."""
    N, L = inputs.shape
    dev = inputs.device
    B = min(batch_size or N, N)
    slot = torch.arange(B, device=dev)  # the puzzle in each row
    nxt = B  # the next puzzle to start
    carry = Carry.empty(model, inputs[:B]).refill(model, torch.ones(B, dtype=torch.bool, device=dev),
                                                  {"inputs": inputs[:B], "puzzle_ids": puzzle_ids[:B]})
    init = initial_logits(model, 1) if guidance != 1.0 else None
    prev = init.expand(B, -1, -1).clone() if init is not None else None
    tokens, used = torch.zeros_like(inputs), torch.zeros(N, dtype=torch.int32, device=dev)
    per_step = torch.zeros((n_sup, N, L), dtype=inputs.dtype, device=dev)
    scores = torch.zeros((n_sup, N), device=dev)
    logits = None
    while slot.numel():
        points = [] if trace is not None else None
        carry, out, score = carry.step(model, act, trace=points)
        raw = out.logits
        dec = raw if guidance == 1.0 else prev.float() + guidance * (raw.float() - prev.float())
        if noise:
            z = carry.state[-1]
            z = z + noise * torch.randn(z.shape, generator=generator, device=z.device, dtype=torch.float32).to(z.dtype)
            carry.state = carry.state[:-1] + (z,)
        answer = dec.argmax(-1).to(inputs.dtype)
        per_step[carry.steps.long() - 1, slot] = answer
        scores[carry.steps.long() - 1, slot] = score.float()
        if trace is not None:
            trace(slot, carry.steps, points)
        if feedback == "prediction":
            carry = carry.feed(answer)
        prev = raw if guidance != 1.0 else None
        done = carry.steps >= n_sup
        if halt == "adaptive":
            done |= score > threshold
        finished = done.nonzero().squeeze(1)
        if finished.numel() == 0:  # one host sync per step: the price of refilling rows
            continue
        if logits is None:
            logits = torch.zeros((N, L, dec.shape[-1]), dtype=dec.dtype, device=dev)
        ids = slot[finished]
        tokens[ids], used[ids], logits[ids] = answer[finished], carry.steps[finished], dec[finished]
        take = finished[:max(0, min(finished.numel(), N - nxt))]  # rows that start a new puzzle
        keep = ~done
        if take.numel():
            new = torch.arange(nxt, nxt + take.numel(), device=dev)
            nxt += take.numel()
            slot[take] = new
            fresh = torch.zeros(slot.shape[0], dtype=torch.bool, device=dev)
            fresh[take] = True
            rows = {"inputs": torch.zeros_like(carry.inputs), "puzzle_ids": torch.zeros_like(carry.puzzle_ids)}
            rows["inputs"][take], rows["puzzle_ids"][take] = inputs[new], puzzle_ids[new].to(carry.puzzle_ids.dtype)
            carry = carry.refill(model, fresh, rows)
            if prev is not None:
                prev = torch.where(fresh.view(-1, 1, 1), init.to(prev.dtype), prev)
            keep = keep | fresh
        if not keep.all():  # no more puzzles for these rows: shrink the batch
            carry, slot = carry.select(keep), slot[keep]
            prev = prev[keep] if prev is not None else None
    # after its last step a puzzle's answer and score stay as they were
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
