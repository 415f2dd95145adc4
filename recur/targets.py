"""Per-step targets and step weights for deep supervision (Deep Improvement Supervision, arXiv 2511.16886).

Plain deep supervision trains every supervision step on the final answer y*. DIS gives step s
its own target y†_s on a monotone path from the puzzle to y*, so each step has to improve on
the last. Both generators below fix one random number per cell when an example enters the
carry (`priority`, [B, L] in [0, 1)) and derive every step's target from it, so the path is
nested (a cell filled at step s stays filled) and resampled each time the example comes back:

  input_to_label   the official code: frame s = the input with floor(s*d/N_sup) of its d cells
                   that differ from y* filled from y* (the lowest-priority ones first);
  mask             the paper: absorbing-state masking with a linear schedule; such a cell still
                   shows the input's token at step s with probability 1 - s/N_sup.

Cells where the input already equals y* (givens) are never corrupted; frame 0 is the input,
frame N_sup is y*. The input's token is the absorbing "unknown" state (blank in Sudoku, empty
square in N-Queens), so no task needs an extra mask token.
"""

from __future__ import annotations

import torch

from .losses import IGNORE


def step_target(kind: str, inputs: torch.Tensor, labels: torch.Tensor, priority: torch.Tensor,
                step: torch.Tensor, n_sup: int) -> torch.Tensor:
    """y†_s [B, L] for rows at supervision step `step` [B] (1-based; 0 gives the input, N_sup the label)."""
    if kind == "label":
        return labels
    open_ = (inputs != labels) & (labels != IGNORE)  # cells the path fills in
    s = step.clamp(0, n_sup).view(-1, 1)
    if kind == "input_to_label":
        # rank of each open cell in priority order (closed cells sort last)
        rank = torch.where(open_, priority, 2.0).argsort(-1).argsort(-1)
        reveal = rank < (s * open_.sum(-1, keepdim=True)) // n_sup
    elif kind == "mask":
        reveal = priority >= 1 - s / n_sup
    else:
        raise ValueError(f"unknown target kind {kind!r}")
    return torch.where(open_ & ~reveal, inputs, labels)


def step_weight(kind: str, step: torch.Tensor, n_sup: int, decay: float) -> torch.Tensor:
    """Loss weight [B] of rows at supervision step `step` [B] (1-based); mean 1 over steps 1..N_sup."""
    s = step.clamp(1, n_sup).to(torch.float32)
    if kind == "uniform":
        return torch.ones_like(s)
    if kind == "linear":
        return 2 * s / (n_sup + 1)
    if kind == "decay":
        norm = n_sup / sum(decay**i for i in range(n_sup))
        return norm * decay ** (s - 1)
    raise ValueError(f"unknown step weighting {kind!r}")
