"""Evaluation: run held-out examples through N_sup supervision steps and score them.

Exact accuracy is the reference's metric: a sequence counts when every supervised token is
right. With halt="none" every sample runs all N_sup steps (the reference protocol) and the
answer with adaptive halting (first step whose halting score is > 0) is scored from the same
pass; with halt="adaptive" samples stop at their halting step and later steps skip them, so
exact_accuracy is then the adaptive one.
"""

from __future__ import annotations

import numpy as np
import torch

from .data import Split, eval_batches
from .dist import Dist
from .losses import IGNORE
from .inference import infer, infer_sampled


@torch.no_grad()
def evaluate(model, split: Split, n_sup: int, batch_size: int, device: torch.device, halt: str = "none",
             act: str = "halt", dist: Dist | None = None, limit: int = 0, task=None, info: dict | None = None,
             feedback: str = "input", guidance: float = 1.0, threshold: float = 0.0, samples: int = 1,
             noise: float = 0.0, acc=None) -> dict:
    """Metrics over the split (summed across ranks): exact/token accuracy, accuracy after every supervision
    step, accuracy and steps with adaptive halting, net calls and FLOPs per example, and the task's own
    metrics (`task.score`) when given. samples > 1: `samples` noisy trajectories per example (all steps),
    the one with the highest final halting score is scored (recur.inference.infer_sampled).

    Tasks scored across examples (`task.evaluator`, ARC's vote) are fed every row's answer and
    sigmoid(final halting score), one batch at a time (no logits are kept), combined over ranks, and their
    scores land under "vote"; pass `acc` (from task.evaluator) to keep the accumulator (for a submission)."""
    dist = dist or Dist()
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}  # name -> sum over examples; "n:<name>" -> how many examples it applies to
    if acc is None and task is not None:
        acc = task.evaluator(split, info)

    def add(name: str, values: np.ndarray) -> None:
        ok = ~np.isnan(values)
        sums[name] = sums.get(name, 0.0) + float(values[ok].sum())
        sums["n:" + name] = sums.get("n:" + name, 0.0) + float(ok.sum())

    for b in eval_batches(split, batch_size, dist.rank, dist.world, limit):
        inputs = torch.from_numpy(b["inputs"]).to(device)
        labels = torch.from_numpy(b["labels"]).to(device)
        ids = torch.from_numpy(b["puzzle_ids"]).to(device)
        res = (infer_sampled(model, inputs, ids, n_sup, samples, noise, act, feedback) if samples > 1 else
               infer(model, inputs, ids, n_sup, halt, act, feedback, guidance, threshold))
        valid = labels != IGNORE
        right = (res.per_step == labels) & valid  # [S, B, L]
        exact_s = right.sum(-1) == valid.sum(-1)  # [S, B]
        token_s = right.sum(-1) / valid.sum(-1).clamp_min(1)  # [S, B]
        # the answer adaptive halting reads: first step with a halting score > threshold, else the last
        fired = res.halt_score > threshold
        stop = torch.where(fired.any(0), fired.int().argmax(0), n_sup - 1)  # [B], 0-based
        per_row = {"exact_accuracy": exact_s[-1], "token_accuracy": token_s[-1],
                   "exact_adaptive": exact_s.gather(0, stop.view(1, -1))[0], "mean_steps_adaptive": stop + 1,
                   "halt_accuracy": fired[-1] == exact_s[-1]}
        per_row.update({f"exact_step_{i + 1}": e for i, e in enumerate(exact_s)})
        per_row.update({f"token_step_{i + 1}": t for i, t in enumerate(token_s)})
        for name, v in per_row.items():
            add(name, v.double().cpu().numpy())
        if task is not None:
            for name, v in task.score(b["inputs"], b["labels"], res.tokens.cpu().numpy(), info).items():
                add(name, np.asarray(v, dtype=np.float64))
        if acc is not None:
            acc.add(b["index"], res.tokens.cpu().numpy(), torch.sigmoid(res.halt_score[-1]).cpu().numpy())
    sums = dist.sum_dict(sums)
    if was_training:
        model.train()
    mean = {k: sums[k] / sums["n:" + k] for k in sums if not k.startswith("n:") and sums["n:" + k]}
    steps = range(1, n_sup + 1)
    run_steps = samples * (n_sup if halt == "none" else mean.get("mean_steps_adaptive", 0.0))  # per example
    out = {"examples": int(sums.get("n:exact_accuracy", 0)), "halt": halt,
           "exact_accuracy": mean.get("exact_accuracy", 0.0), "token_accuracy": mean.get("token_accuracy", 0.0),
           "exact_adaptive": mean.get("exact_adaptive", 0.0), "mean_steps_adaptive": mean.get("mean_steps_adaptive", 0.0),
           "halt_accuracy": mean.get("halt_accuracy", 0.0),
           # cost per example: all steps (halt=none), and with adaptive halting
           "net_calls": run_steps * model.net_calls,
           "net_calls_adaptive": mean.get("mean_steps_adaptive", 0.0) * model.net_calls,
           "flops": run_steps * model.step_flops(False),
           "exact_per_step": [mean.get(f"exact_step_{i}", 0.0) for i in steps],
           "token_per_step": [mean.get(f"token_step_{i}", 0.0) for i in steps]}
    out["task"] = {k: v for k, v in mean.items() if k not in out and not k.startswith(("exact_step_", "token_step_"))}
    if acc is not None:
        out["vote"] = task.evaluated(dist.merged(acc))
    return out


def show(task, info: dict, inputs: np.ndarray, answer: np.ndarray, steps: int, label: np.ndarray | None,
         colour: bool = False) -> str:
    """A puzzle, the model's answer and whether it is right, side by side (tasks with pictures of their own,
    ARC's coloured grids, draw them: task.show)."""
    if hasattr(task, "show"):
        return task.show(info, inputs, answer, steps, label, colour)
    answer = np.where(inputs == 0, 0, answer)  # positions that are padding in the puzzle are not part of it
    left = task.render(inputs, info).splitlines()
    right = task.render(answer, info).splitlines()
    width = max(len(line) for line in left)
    ok = task.verify(inputs, answer, info)
    verdict = "solved" if ok else ("wrong" if label is None or not np.array_equal(answer, label) else "matches label")
    head = f"{'puzzle'.ljust(width)}    answer after {steps} supervision step{'s' * (steps != 1)}: {verdict}"
    return "\n".join([head] + [f"{a.ljust(width)}    {b}" for a, b in zip(left, right)])
