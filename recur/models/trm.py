"""TRM, the Tiny Recursive Model (Jolicoeur-Martineau, 2025, arXiv 2510.04871), and its relatives.

One small net is applied again and again. Per supervision step, with x the embedded input,
y the current answer and z the latent reasoning state (all [B, P+L, D]):

    repeat T cycles:                    # the first T-1 without gradients
        repeat n times: z <- net(z, y + x)
        y <- net(y, z)
    logits = head(y)[:, P:];  q = q_head(y[:, 0])

where net(h, inj) = blocks(h + inj). Flags give the paper's ablations and HRM:
- separate_nets: y <- net_y(y, z) with weights of its own;
- grad=one_step: gradients only through the last z- and y-updates (HRM's 1-step gradient);
- single_z: no y; z <- net(z, x) n times, then z <- net(z), read out from z.
HRM (Wang et al. 2025) is exactly separate_nets + one_step with 4-layer nets, T=N=2 high-level
cycles of n=T_HRM=2 low-level steps and Q-learning halting (recursion.act=q_learning): its
z_L <- L(z_L + z_H + x), z_H <- H(z_H + z_L) are the z- and y-updates above (net = L, net_y = H).
The engine (recur.recursion) owns the no-grad/grad split, deep supervision and halting.
"""

from __future__ import annotations

import torch

from ..config import ModelConfig
from ..recursion import unroll
from .base import PuzzleModel


class TRM(PuzzleModel):
    """State (y, z), or (z,) with single_z; each [B, P+L, D]."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int,
                 dtype: torch.dtype = torch.float32):
        states = ("z_init",) if cfg.single_z else ("y_init", "z_init")
        super().__init__(cfg, vocab_size, seq_len, num_puzzle_ids, dtype, states)
        self.net = self.stack()
        self.net_y = self.stack() if cfg.separate_nets else None

    def calls(self, depth: tuple[int, int] | None = None) -> tuple[int, int]:
        """(net applications, backpropagated ones) per supervision step at depth (T, n) (default: the model's):
        T*(n+1), and n+1 (or 2 with grad=one_step)."""
        T, n = depth or (self.cfg.T, self.cfg.n)
        return T * (n + 1), (n + 1 if self.cfg.grad == "last_cycle" else 2)

    def forward(self, state, inputs: torch.Tensor, puzzle_ids: torch.Tensor, step: torch.Tensor | None = None,
                trace: list | None = None, depth: tuple[int, int] | None = None):
        """One supervision step. Returns the new (detached) state and the step's outputs.

        `step` [B]: the 1-based supervision step (used with model.step_embedding). `trace`: when a list, the
        readout after every answer update (T per step) is appended to it (recur.profile). `depth`: (T, n) for this
        step in place of the model's (a depth curriculum chooses it)."""
        c, rope = self.cfg, self.rope
        T, n = depth or (c.T, c.n)
        x = self.embed_input(inputs, puzzle_ids, step)
        net_y = self.net_y or self.net
        if c.single_z:
            latent = lambda s: (self.net(s[0], x, rope),)  # noqa: E731  z <- net(z, x)
            answer = lambda s: (self.net(s[0], 0, rope),)  # noqa: E731  z <- net(z)
        else:
            latent = lambda s: (s[0], self.net(s[1], s[0] + x, rope))  # noqa: E731  z <- net(z, y + x)
            answer = lambda s: (net_y(s[0], s[1], rope), s[1])  # noqa: E731  y <- net_y(y, z)
        if trace is not None:
            answer = _traced(answer, lambda s: trace.append(self.readout(s[0])))
        plan = ([latent] * n + [answer]) * T
        state = unroll(plan, tuple(state), self.calls(depth)[1], self.recompute)
        return tuple(s.detach() for s in state), self.readout(state[0])


def _traced(update, record):
    def run(state):
        state = update(state)
        record(state)
        return state
    return run
