"""The dead-compute profiler: which recursion steps of a trained model actually improve its answer.

Every answer update inside every supervision step is a *point* r (TRM: T per step). At each
point the answer state is read out, ℓ_r = head(y_r), and compared with the previous point's
ℓ_{r-1} (point 0: the initial state). Per point, over the cells the puzzle leaves open
(label != input, PAD ignored):

  accuracy        token and exact accuracy of argmax ℓ_r, and its gain over point r-1;
  advantage margin  Δℓ(y*) − E_{a∼π_r}[Δℓ(a)] with Δℓ = ℓ_r − ℓ_{r-1} and π_r = softmax(ℓ_r)
                  (the DIS paper's Prop. 4.1 at w = 1: the update helps iff the margin is > 0);
                  mean per token and the fraction of tokens with margin <= 0.

A point is *dead* when its mean margin is <= 0 or neither token nor exact accuracy rose. The
verdict is the smallest number of net calls per example whose exact accuracy is within 0.5
point of the full run's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .data import Split, eval_batches
from .errors import RecurError
from .inference import infer, initial_logits
from .losses import IGNORE
from .plots import have_matplotlib, save, subplots

TOLERANCE = 0.005  # "within 0.5 point"


@torch.no_grad()
def profile(model, split: Split, n_sup: int, batch_size: int, device: torch.device, feedback: str = "input",
            limit: int = 0) -> dict:
    """Per-point metrics over the split (see the module docstring); returns a JSON-able dict."""
    was_training = model.training
    model.eval()
    sums: dict[tuple[int, int], np.ndarray] = {}  # (step, cycle) -> [tok right, open cells, exact, rows, margin, margin<=0]
    per_point = 0.0
    for b in eval_batches(split, batch_size, 0, 1, limit):
        inputs = torch.from_numpy(b["inputs"]).to(device)
        labels = torch.from_numpy(b["labels"]).to(device)
        ids = torch.from_numpy(b["puzzle_ids"]).to(device)
        open_ = (labels != IGNORE) & (labels != inputs)  # [B, L]
        n_open = open_.sum(-1)
        before = [initial_logits(model, len(inputs)).float()]

        def add(s: int, t: int, logits: torch.Tensor) -> None:
            right = (logits.argmax(-1) == labels) & open_
            delta = logits - before[0]  # [B, L, V]
            margin = delta.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1) - (logits.softmax(-1) * delta).sum(-1)
            row = np.array([right.sum().item(), n_open.sum().item(), (right.sum(-1) == n_open).sum().item(), len(labels),
                            (margin * open_).sum().item(), ((margin <= 0) & open_).sum().item()], dtype=np.float64)
            sums[(s, t)] = sums.get((s, t), 0) + row
            before[0] = logits

        def record(puzzles, steps, points) -> None:  # every row is at the same step: no halting, no refill
            nonlocal per_point
            per_point = model.net_calls / len(points)
            for t, out in enumerate(points):
                add(int(steps[0]), t + 1, out.logits.float())

        add(0, 0, before[0])
        infer(model, inputs, ids, n_sup, "none", feedback=feedback, trace=record)
    if was_training:
        model.train()
    if not sums:
        raise RecurError("the split holds no examples to profile")
    rows, last_tok, last_exact = [], None, None
    for (s, t), v in sorted(sums.items()):
        tok, exact = v[0] / max(v[1], 1), v[2] / max(v[3], 1)
        margin, nonpos = v[4] / max(v[1], 1), v[5] / max(v[1], 1)
        calls = 0.0 if s == 0 else (s - 1) * model.net_calls + t * per_point
        row = {"step": s, "cycle": t, "net_calls": calls, "token_accuracy": tok, "exact_accuracy": exact}
        if s:
            row.update(token_gain=tok - last_tok, exact_gain=exact - last_exact, margin=margin, margin_nonpositive=nonpos,
                       dead=bool(margin <= 0 or (tok <= last_tok and exact <= last_exact)))
        rows.append(row)
        last_tok, last_exact = tok, exact
    points = rows[1:]
    final = points[-1]["exact_accuracy"]
    enough = next(p for p in points if p["exact_accuracy"] >= final - TOLERANCE)
    return {"examples": int(sums[(0, 0)][3]), "n_sup": n_sup, "net_calls_per_step": model.net_calls,
            "points": rows, "dead_fraction": sum(p["dead"] for p in points) / len(points),
            "full_net_calls": points[-1]["net_calls"], "full_exact": final,
            "enough_net_calls": enough["net_calls"], "enough_exact": enough["exact_accuracy"]}


def verdict(res: dict) -> str:
    full, enough = res["full_net_calls"], res["enough_net_calls"]
    return (f"{enough:.0f} of {full:.0f} net calls per example ({enough / full:.0%}) keep exact accuracy within "
            f"{100 * TOLERANCE:.1f} point of the full run ({res['enough_exact']:.3f} vs {res['full_exact']:.3f}); "
            f"{res['dead_fraction']:.0%} of the recursion steps are dead")


def table(res: dict) -> str:
    head = "| step | cycle | net calls | token acc | exact acc | token gain | exact gain | margin | margin<=0 | dead |"
    lines = [head, "|" + "---|" * 10]
    for p in res["points"][1:]:
        lines.append(f"| {p['step']} | {p['cycle']} | {p['net_calls']:.0f} | {p['token_accuracy']:.4f} | "
                     f"{p['exact_accuracy']:.4f} | {p['token_gain']:+.4f} | {p['exact_gain']:+.4f} | {p['margin']:+.4f} | "
                     f"{p['margin_nonpositive']:.3f} | {'dead' if p['dead'] else ''} |")
    return "\n".join(lines)


def write(res: dict, out_dir: Path) -> tuple[Path, Path | None]:
    """out_dir/profile.json (+ out_dir/plots/profile.png: accuracy against net calls, margin per point)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "profile.json"
    path.write_text(json.dumps(res, indent=1))
    if not have_matplotlib():
        return path, None
    pts = res["points"]
    calls = [p["net_calls"] for p in pts]
    fig, ax = subplots(2)
    ax[0].plot(calls, [p["exact_accuracy"] for p in pts], "o-", label="exact")
    ax[0].plot(calls, [p["token_accuracy"] for p in pts], "s-", label="token (open cells)")
    ax[0].axvline(res["enough_net_calls"], color="gray", ls="--", label="within 0.5 point of the full run")
    ax[0].set(title="accuracy against net calls per example", xlabel="net calls", ylim=(0, 1.02))
    dead = [p for p in pts[1:] if p["dead"]]
    ax[1].plot(calls[1:], [p["margin"] for p in pts[1:]], "o-", label="mean advantage margin")
    ax[1].plot([p["net_calls"] for p in dead], [p["margin"] for p in dead], "x", color="red", ms=9, label="dead")
    ax[1].axhline(0, color="gray", lw=0.8)
    ax[1].set(title="advantage margin per recursion step", xlabel="net calls", yscale="symlog")
    return path, save(fig, ax, out_dir / "plots" / "profile.png")
