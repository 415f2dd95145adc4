"""Evaluation: run held-out examples through N_sup supervision steps and score them.

Exact accuracy is the reference's metric: a sequence counts when every supervised token is
right. With halt="none" every sample runs all N_sup steps (the reference protocol) and the
answer with adaptive halting (first step with q_halt > 0) is scored from the same pass; with
halt="adaptive" samples stop at their halting step and later steps skip them.
"""

from __future__ import annotations

import numpy as np
import torch

from .data import Split, eval_batches
from .dist import Dist
from .losses import IGNORE
from .recursion import infer


@torch.no_grad()
def evaluate(model, split: Split, n_sup: int, batch_size: int, device: torch.device, halt: str = "none",
             dist: Dist | None = None, limit: int = 0) -> dict:
    """Metrics over the split (summed across ranks): exact/token accuracy, per-step accuracy, steps used."""
    dist = dist or Dist()
    was_training = model.training
    model.eval()
    S = n_sup
    sums = torch.zeros(6 + 2 * S, dtype=torch.float64, device=device)
    for b in eval_batches(split, batch_size, dist.rank, dist.world, limit):
        inputs = torch.from_numpy(b["inputs"]).to(device)
        labels = torch.from_numpy(b["labels"]).to(device)
        ids = torch.from_numpy(b["puzzle_ids"]).to(device)
        res = infer(model, inputs, ids, n_sup, halt)
        valid = labels != IGNORE
        count = valid.sum(-1).clamp_min(1)
        right = (res.per_step == labels) & valid  # [S, B, L]
        exact_s = (right.sum(-1) == valid.sum(-1)).double()  # [S, B]
        token_s = right.sum(-1).double() / count  # [S, B]
        # adaptive answer: the first step whose q_halt > 0, else the last
        fired = res.q_halt > 0
        stop = torch.where(fired.any(0), fired.double().argmax(0), S - 1)  # [B] 0-based step
        pick = stop.view(1, -1)
        sums += torch.cat([torch.stack([
            torch.tensor(float(len(labels)), dtype=torch.float64, device=device),
            exact_s[-1].sum(), token_s[-1].sum(),
            exact_s.gather(0, pick).sum(), (stop + 1).double().sum(),
            ((res.q_halt[-1] > 0) == exact_s[-1].bool()).double().sum()]),
            exact_s.sum(1), token_s.sum(1)])
    dist.all_reduce(sums)
    if was_training:
        model.train()
    n = max(sums[0].item(), 1.0)
    s = (sums / n).tolist()
    return {
        "examples": int(sums[0].item()),
        "exact_accuracy": s[3] if halt == "adaptive" else s[1],
        "token_accuracy": s[2],
        "exact_at_nsup": s[1] if halt == "none" else None,
        "exact_adaptive": s[3],
        "mean_steps_adaptive": s[4],
        "q_halt_accuracy": s[5],
        "exact_per_step": s[6:6 + S],
        "token_per_step": s[6 + S:6 + 2 * S],
    }


def show(task, info: dict, inputs: np.ndarray, answer: np.ndarray, steps: int, label: np.ndarray | None) -> str:
    """A puzzle, the model's answer and whether it is right, side by side."""
    left = task.render(inputs, info).splitlines()
    right = task.render(answer, info).splitlines()
    width = max(len(line) for line in left)
    ok = task.verify(inputs, answer, info)
    verdict = "solved" if ok else ("wrong" if label is None or not np.array_equal(answer, label) else "matches label")
    head = f"{'puzzle'.ljust(width)}    answer after {steps} supervision step{'s' * (steps != 1)}: {verdict}"
    return "\n".join([head] + [f"{a.ljust(width)}    {b}" for a, b in zip(left, right)])
