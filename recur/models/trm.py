"""TRM, the Tiny Recursive Model (Jolicoeur-Martineau, 2025, arXiv 2510.04871).

One small net is applied again and again. Per supervision step, with x the embedded input,
y the current answer and z the latent reasoning state (all [B, P+L, D]):

    repeat T cycles:                    # the first T-1 without gradients
        repeat n times: z <- net(z, y + x)
        y <- net(y, z)
    logits = head(y)[:, P:];  q = q_head(y[:, 0])

where net(h, inj) = Blocks(h + inj). The engine (recur.recursion) owns the no-grad/grad split,
deep supervision and halting; this file is only the architecture. Names map to the reference
code as y = z_H, z = z_L, T = H_cycles, n = L_cycles (see recur.config).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..recursion import StepOutput, unroll
from .layers import Block, Linear, rope_tables, trunc_normal_


class Net(nn.Module):
    """The shared stack: net(h, inj) = blocks(h + inj)."""

    def __init__(self, cfg: ModelConfig, length: int):
        super().__init__()
        self.layers = nn.ModuleList(
            Block(cfg.hidden, cfg.heads, cfg.expansion, length, cfg.mixer == "mlp_t", cfg.norm_eps)
            for _ in range(cfg.layers))

    def forward(self, h: torch.Tensor, inj: torch.Tensor, rope) -> torch.Tensor:
        h = h + inj
        for layer in self.layers:
            h = layer(h, rope)
        return h


class TRM(nn.Module):
    """Tiny Recursive Model. State = (y, z), each [B, P+L, D]."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.cfg, self.dtype = cfg, dtype
        D, P = cfg.hidden, cfg.prefix_len
        self.prefix_len, self.length = P, P + seq_len
        self.embed_scale = math.sqrt(D)
        # token embedding std 1/sqrt(D), scaled back up by sqrt(D) at use
        self.embed = nn.Parameter(trunc_normal_(torch.empty(vocab_size, D), std=1 / self.embed_scale))
        # per-puzzle vectors, zero-initialised; trained by sign-SGD (recur.optim), outside the EMA
        self.puzzle_emb = (nn.Parameter(torch.zeros(num_puzzle_ids, cfg.puzzle_emb_dim))
                           if cfg.puzzle_emb_dim > 0 else None)
        self.pos_emb = (nn.Parameter(trunc_normal_(torch.empty(self.length, D), std=1 / self.embed_scale))
                        if cfg.pos == "learned" else None)
        if cfg.pos == "rope":
            cos, sin = rope_tables(D // cfg.heads, self.length, cfg.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.net = Net(cfg, self.length)
        self.head = Linear(D, vocab_size)
        self.q_head = Linear(D, 2, bias=True)
        with torch.no_grad():  # nothing halts early in training until the head has learned something
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        # fixed random initial y and z (saved, never trained)
        self.register_buffer("y_init", trunc_normal_(torch.empty(D), std=1.0))
        self.register_buffer("z_init", trunc_normal_(torch.empty(D), std=1.0))

    @property
    def net_calls(self) -> int:
        """Applications of the shared net per supervision step: T*(n+1)."""
        return self.cfg.T * (self.cfg.n + 1)

    def init_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (batch_size, self.length, self.cfg.hidden)
        return (self.y_init.to(self.dtype).expand(shape).clone(),
                self.z_init.to(self.dtype).expand(shape).clone())

    def reset_state(self, state, mask: torch.Tensor):
        """Rows where mask [B] is set start again from the initial y and z."""
        m = mask.view(-1, 1, 1)
        return tuple(torch.where(m, init.to(s.dtype), s) for s, init in zip(state, (self.y_init, self.z_init)))

    @torch.compiler.disable  # sparse gradients stay outside compiled graphs
    def _puzzle_rows(self, puzzle_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(puzzle_ids.long(), self.puzzle_emb, sparse=self.training)

    def embed_input(self, inputs: torch.Tensor, puzzle_ids: torch.Tensor) -> torch.Tensor:
        """x: tokens [B, L] (+ puzzle ids [B]) -> [B, P+L, D], scaled by sqrt(D)."""
        x = F.embedding(inputs.long(), self.embed.to(self.dtype))
        if self.prefix_len:
            B, D = inputs.shape[0], self.cfg.hidden
            prefix = x.new_zeros(B, self.prefix_len * D)
            if self.puzzle_emb is not None:
                rows = self._puzzle_rows(puzzle_ids).to(self.dtype)  # [B, puzzle_emb_dim]
                prefix = torch.cat((rows, prefix[:, rows.shape[1]:]), dim=1)
            x = torch.cat((prefix.view(B, self.prefix_len, D), x), dim=1)
        if self.pos_emb is not None:
            x = 0.707106781 * (x + self.pos_emb.to(self.dtype))  # keeps the variance of a sum of two
        return self.embed_scale * x

    def forward(self, state, inputs: torch.Tensor, puzzle_ids: torch.Tensor, n_grad: int | None = None):
        """One supervision step. Returns the new (detached) state and the step's outputs.

        n_grad: how many of the last net calls get gradients; default n+1 (the whole last cycle).
        """
        rope = (self.rope_cos, self.rope_sin) if self.cfg.pos == "rope" else None
        x = self.embed_input(inputs, puzzle_ids)

        def latent(s):  # z <- net(z, y + x)
            y, z = s
            return y, self.net(z, y + x, rope)

        def answer(s):  # y <- net(y, z)
            y, z = s
            return self.net(y, z, rope), z

        plan = ([latent] * self.cfg.n + [answer]) * self.cfg.T
        y, z = unroll(plan, tuple(state), self.cfg.n + 1 if n_grad is None else n_grad)
        logits = self.head(y)[:, self.prefix_len:]  # [B, L, V]
        q = self.q_head(y[:, 0]).float()  # [B, 2]
        return (y.detach(), z.detach()), StepOutput(logits=logits, q_halt=q[:, 0], q_continue=q[:, 1])
