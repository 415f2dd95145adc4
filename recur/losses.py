"""Deep-supervision objective: token cross-entropy plus the halting BCE.

Per row: lm = mean over the row's supervised tokens of CE; halt = BCE(q_halt, answer exactly
right). Total = sum over rows of (lm + halt_weight * halt), which the trainer divides by the
*global* batch size, so data-parallel gradient sums equal the single-process mean.
Labels equal to IGNORE (0, the PAD token) are not supervised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = 0


def log_stablemax(logits: torch.Tensor) -> torch.Tensor:
    """log of s(x)/sum s(x) with s(x) = x+1 for x >= 0 and 1/(1-x) for x < 0 (Prieto et al., 2025)."""
    s = torch.where(logits < 0, 1 / (1 - logits + 1e-30), logits + 1)
    return torch.log(s / s.sum(-1, keepdim=True))


def token_ce(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token cross-entropy [B, L]; 0 at ignored positions. stablemax runs in float64 as in the reference."""
    valid = labels != IGNORE
    target = torch.where(valid, labels, 0).long()
    if kind == "stablemax":
        logp = log_stablemax(logits.double()).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        return torch.where(valid, -logp, 0).to(torch.float32)
    ce = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), reduction="none").view(labels.shape)
    return torch.where(valid, ce, 0)


@dataclass
class StepLoss:
    """Loss sums over the rows in `rows` and per-row correctness (all [B] tensors are detached)."""

    total: torch.Tensor
    """Sum over rows of lm + halt_weight*halt (to be divided by the global batch)."""
    lm: torch.Tensor
    """Sum over rows of the per-row mean token loss (detached)."""
    halt: torch.Tensor
    """Sum over rows of the halting BCE (detached)."""
    token_acc: torch.Tensor
    """[B] fraction of supervised tokens right."""
    exact: torch.Tensor
    """[B] bool: every supervised token right."""


def step_loss(logits, q_halt, labels, rows: torch.Tensor, kind: str, act: bool, halt_weight: float) -> StepLoss:
    """Loss of one supervision step over the rows where `rows` [B] is True."""
    valid = labels != IGNORE
    count = valid.sum(-1)
    with torch.no_grad():
        right = valid & (logits.argmax(-1) == labels)
        exact = right.sum(-1) == count
        token_acc = right.sum(-1) / count.clamp_min(1)
    lm_rows = token_ce(logits, labels, kind).sum(-1) / count.clamp_min(1)
    weight = rows.to(lm_rows.dtype)
    lm = (lm_rows * weight).sum()
    total = lm
    halt = lm.new_zeros(())
    if act:
        bce = F.binary_cross_entropy_with_logits(q_halt, exact.to(q_halt.dtype), reduction="none")
        halt = (bce * weight).sum()
        total = lm + halt_weight * halt
    return StepLoss(total=total, lm=lm.detach(), halt=halt.detach(), token_acc=token_acc, exact=exact)
