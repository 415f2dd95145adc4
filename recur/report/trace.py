"""The recursion of a trained model, read out after every answer update (every y-update).

One function, `trace_puzzles`, runs a batch through N_sup supervision steps of the shared driver
(recur.inference.infer) with its trace hook, as the profiler (recur.profile) does, and keeps the argmax answer at every
point plus the halting score after every step. The report, the step-through viewer and
`recur solve --show-steps` read the recursion only through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..inference import infer


@dataclass
class Trace:
    """What a batch's recursion looked like, point by point (a point = one answer update)."""

    tokens: torch.Tensor
    """[P, B, L] argmax answer after every point, P = N_sup * points per step (TRM: T per step)."""
    step: list[int]
    """[P] the 1-based supervision step of each point."""
    cycle: list[int]
    """[P] the 1-based answer update of each point within its step (TRM: the cycle 1..T)."""
    net_calls: list[float]
    """[P] net calls per example spent up to and including each point."""
    halt_score: torch.Tensor
    """[N_sup, B] float32 halting score after every step (> 0: adaptive halting stops there; -inf with act=off)."""


@torch.no_grad()
def trace_puzzles(model, inputs: torch.Tensor, puzzle_ids: torch.Tensor, n_sup: int, feedback: str = "input",
                  act: str = "halt") -> Trace:
    """Run inputs [B, L] (on the model's device) through all n_sup supervision steps, no halting, and
    return the answer after every y-update. `feedback` and `act` are the run's recursion.feedback and
    recursion.act (what the net reads next, and how the halting score is formed)."""
    was_training = model.training
    model.eval()
    tokens, steps, cycles, calls = [], [], [], []

    def record(puzzles, step, points) -> None:  # every row is at the same step: no halting, no refill
        s, per_point = int(step[0]), model.net_calls / len(points)
        for t, o in enumerate(points):
            tokens.append(o.logits.argmax(-1))
            steps.append(s)
            cycles.append(t + 1)
            calls.append((s - 1) * model.net_calls + (t + 1) * per_point)

    res = infer(model, inputs, puzzle_ids, n_sup, "none", act, feedback, trace=record)
    if was_training:
        model.train()
    return Trace(tokens=torch.stack(tokens), step=steps, cycle=cycles, net_calls=calls,
                 halt_score=res.halt_score.float())
