"""What every model that thinks by repeating itself shares: `unroll`, the step output, the model interface.

A recursive puzzle model (recur.models.trm.TRM, HRM as its flags, the transformer baseline) is a
`RecursiveModel`: one call is one supervision step, built from `unroll`, which applies a list of
updates with gradients only through the last few. The language models reuse `unroll` for their
recurrent core (backprop through the last k iterations). What happens across supervision steps
(the carry, halting, per-step targets, the training schedules) is puzzle deep supervision,
recur.supervision; inference is recur.inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch

Depth = tuple[int, int]
"""(T, n) of one supervision step: T cycles of n latent updates and one answer update."""


def unroll(updates: Sequence[Callable], state, n_grad: int, recompute: bool = False):
    """Apply `updates` in order; all but the last `n_grad` run without gradients.

    TRM: updates = ([z-update]*n + [y-update])*T with n_grad = n+1 (backprop through the last cycle).
    recompute: each backpropagated update keeps only its input state and runs again during backward (activation
    checkpointing): one more forward of those n_grad updates buys the memory of their activations.
    """
    split = len(updates) - n_grad
    with torch.no_grad():
        for f in updates[:split]:
            state = f(state)
    for f in updates[split:]:
        if recompute and torch.is_grad_enabled():
            state = torch.utils.checkpoint.checkpoint(f, state, use_reentrant=False)
        else:
            state = f(state)
    return state


@dataclass
class StepOutput:
    """What one supervision step produces."""

    logits: torch.Tensor
    """[B, L, V] answer logits."""
    q_halt: torch.Tensor
    """[B] float32 halting logit (halt when > 0)."""
    q_continue: torch.Tensor
    """[B] float32 continue logit (used by Q-learning ACT variants)."""


class RecursiveModel(Protocol):
    """The interface of the recursive puzzle models, as deep supervision, inference and the profiler use it."""

    training: bool
    dtype: torch.dtype
    net_calls: int
    """Net applications per supervision step at the model's own depth."""

    def init_state(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """The latent state a puzzle starts from, e.g. TRM's (y, z), each [B, P+L, D]; state[0] is the answer."""

    def reset_state(self, state: tuple[torch.Tensor, ...], mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Rows where mask [B] is set start again from the initial state."""

    def __call__(self, state: tuple[torch.Tensor, ...], inputs: torch.Tensor, puzzle_ids: torch.Tensor,
                 step: torch.Tensor | None = None, trace: list | None = None,
                 depth: Depth | None = None) -> tuple[tuple[torch.Tensor, ...], StepOutput]:
        """One supervision step on tokens [B, L] at 1-based step index `step` [B]: (the new detached state, its
        output). `trace`, a list, receives the readout after every answer update; `depth` replaces (T, n)."""

    def readout(self, h: torch.Tensor) -> StepOutput:
        """The answer and halting logits read from an answer state [B, P+L, D]."""

    def calls(self, depth: Depth | None = None) -> tuple[int, int]:
        """(net applications, backpropagated ones) per supervision step."""

    def step_flops(self, training: bool, depth: Depth | None = None) -> float:
        """Matmul FLOPs per example of one supervision step (forward, plus backward when training)."""
