"""Deep-supervision objective: token cross-entropy plus the halting BCE.

Per row: lm = mean over the row's supervised tokens of CE; halt = BCE(q_halt, answer exactly
right); with Q-learning also cont = BCE(q_continue, bootstrapped target). Total = sum over rows
of lm + halt_weight*(halt + cont), which the trainer divides by the *global* batch size, so
data-parallel gradient sums equal the single-process mean.
Labels equal to IGNORE (0, the PAD token) are not supervised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = 0


def log_stablemax(logits: torch.Tensor) -> torch.Tensor:
    """log of s(x)/sum s(x) with s(x) = x+1 for x >= 0 and 1/(1-x) for x < 0 (Prieto et al., 2025).

    Each branch sees only its own half of the axis, so the branch torch.where discards stays finite:
    1/(1-x) evaluated at x = 1 (a common bf16 logit) has an infinite float32 derivative, and 0*inf
    would turn the whole gradient into NaN. For x < 0 this is the reference's 1/(1-x+1e-30) exactly
    (1e-30 is below the resolution of 1-x >= 1).
    """
    s = torch.where(logits < 0, 1 / (1 - logits.clamp(max=0)), logits.clamp(min=0) + 1)
    return torch.log(s / s.sum(-1, keepdim=True))


def token_ce(logits: torch.Tensor, labels: torch.Tensor, kind: str, precision: str = "float64") -> torch.Tensor:
    """Per-token cross-entropy [B, L]; 0 at ignored positions. stablemax runs in float64 as in the reference
    unless precision="float32"."""
    valid = labels != IGNORE
    target = torch.where(valid, labels, 0).long()
    if kind == "stablemax":
        wide = logits.double() if precision == "float64" else logits.float()
        logp = log_stablemax(wide).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        return torch.where(valid, -logp, 0).to(torch.float32)
    ce = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), reduction="none").view(labels.shape)
    return torch.where(valid, ce, 0)


@dataclass
class StepLoss:
    """Loss sums over the rows in `rows` and per-row correctness (all [B] tensors are detached)."""

    total: torch.Tensor
    """Sum over rows of lm + halt_weight*(halt + continue) (to be divided by the global batch)."""
    lm: torch.Tensor
    """Sum over rows of the per-row mean token loss (detached)."""
    halt: torch.Tensor
    """Sum over rows of the halting BCE (detached)."""
    cont: torch.Tensor
    """Sum over rows of the Q-continue BCE (detached; 0 unless Q-learning)."""
    token_acc: torch.Tensor
    """[B] fraction of supervised tokens right."""
    exact: torch.Tensor
    """[B] bool: every supervised token right."""


def step_loss(logits, q_halt, q_continue, labels, rows: torch.Tensor, kind: str, act: str, halt_weight: float,
              target_continue: torch.Tensor | None = None, precision: str = "float64") -> StepLoss:
    """Loss of one supervision step over the rows where `rows` [B] is True, or weighted by `rows` when it is
    a float tensor (per-step loss weights; 0 drops a row).

    act="halt"/"q_learning": q_halt learns whether the answer is exactly right; with a
    `target_continue` [B] (Q-learning), q_continue learns it too. act="off": token loss only.
    """
    valid = labels != IGNORE
    count = valid.sum(-1)
    with torch.no_grad():
        right = valid & (logits.argmax(-1) == labels)
        exact = right.sum(-1) == count
        token_acc = right.sum(-1) / count.clamp_min(1)
    lm_rows = token_ce(logits, labels, kind, precision).sum(-1) / count.clamp_min(1)
    weight = rows.to(lm_rows.dtype)
    lm = (lm_rows * weight).sum()
    halt = cont = lm.new_zeros(())
    if act != "off":
        halt = (F.binary_cross_entropy_with_logits(q_halt, exact.to(q_halt.dtype), reduction="none") * weight).sum()
    if target_continue is not None:
        cont = (F.binary_cross_entropy_with_logits(q_continue, target_continue, reduction="none") * weight).sum()
    return StepLoss(total=lm + halt_weight * (halt + cont), lm=lm.detach(), halt=halt.detach(), cont=cont.detach(),
                    token_acc=token_acc, exact=exact)
