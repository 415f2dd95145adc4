"""What every puzzle model shares: embeddings in, heads out, fixed initial states.

x = sqrt(D) * [prefix tokens | token embeddings] (+ learned positions), where prefix token 0..P-1
carry the per-puzzle embedding (or zeros). Answers are read as logits = head(h)[:, P:] and the
halting logits as q_head(h[:, 0]). Subclasses define the state, `forward` (one supervision step) and
`calls` (its cost); together they are a recur.recursion.RecursiveModel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..recursion import StepOutput
from .layers import Linear, Stack, rope_tables, trunc_normal_


class PuzzleModel(nn.Module):
    """Shared I/O. `states` names the fixed random vectors each state tensor starts from."""

    recompute = False  # recompute backpropagated net calls in backward (train.recompute; see recursion.unroll)

    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int, dtype: torch.dtype,
                 states: tuple[str, ...]):
        super().__init__()
        self.cfg, self.dtype, self.states = cfg, dtype, states
        D, P = cfg.hidden, cfg.prefix_len
        self.prefix_len, self.length = P, P + seq_len
        self.embed_scale = math.sqrt(D)
        # token embedding std 1/sqrt(D), scaled back up by sqrt(D) at use
        self.embed = nn.Parameter(trunc_normal_(torch.empty(vocab_size, D), std=1 / self.embed_scale))
        # per-puzzle vectors, zero-initialised; trained by sign-SGD (recur.optim), outside the EMA
        self.puzzle_emb = (nn.Parameter(torch.zeros(num_puzzle_ids, cfg.puzzle_emb_dim,
                                                    dtype=getattr(torch, cfg.puzzle_emb_dtype)))
                           if cfg.puzzle_emb_dim > 0 else None)
        self.pos_emb = (nn.Parameter(trunc_normal_(torch.empty(self.length, D), std=1 / self.embed_scale))
                        if cfg.pos == "learned" else None)
        # DIS time conditioning: row s-1 is added at supervision step s
        self.step_emb = (nn.Parameter(trunc_normal_(torch.empty(cfg.step_embedding, D), std=1 / self.embed_scale))
                         if cfg.step_embedding else None)
        if cfg.pos == "rope":
            cos, sin = rope_tables(D // cfg.heads, self.length, cfg.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.head = Linear(D, vocab_size)
        self.q_head = Linear(D, 2, bias=True)
        with torch.no_grad():  # nothing halts early in training until the head has learned something
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        for name in states:  # fixed random initial states (saved, never trained)
            self.register_buffer(name, trunc_normal_(torch.empty(D), std=1.0))

    def stack(self) -> Stack:
        """A fresh stack of `layers` blocks of this model's shape."""
        c = self.cfg
        return Stack(c.hidden, c.heads, c.expansion, self.length, c.mixer == "mlp_t", c.norm_eps, c.layers,
                     c.ffn_multiple)

    @property
    def rope(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return (self.rope_cos, self.rope_sin) if self.cfg.pos == "rope" else None

    def init_state(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        shape = (batch_size, self.length, self.cfg.hidden)
        return tuple(getattr(self, n).to(self.dtype).expand(shape).clone() for n in self.states)

    def reset_state(self, state, mask: torch.Tensor):
        """Rows where mask [B] is set start again from the initial state."""
        m = mask.view(-1, 1, 1)
        return tuple(torch.where(m, getattr(self, n).to(s.dtype), s) for s, n in zip(state, self.states))

    def _puzzle_rows(self, puzzle_ids: torch.Tensor) -> torch.Tensor:
        rows = lambda ids: F.embedding(ids.long(), self.puzzle_emb, sparse=self.training)  # noqa: E731
        if torch.compiler.is_compiling():  # sparse gradients stay outside compiled graphs; deciding this here,
            return torch.compiler.disable(rows)(puzzle_ids)  # not by a decorator, keeps the compiler unimported
        return rows(puzzle_ids)

    def embed_input(self, inputs: torch.Tensor, puzzle_ids: torch.Tensor, step: torch.Tensor | None = None) -> torch.Tensor:
        """x: tokens [B, L] (+ puzzle ids [B], + the 1-based supervision step [B]) -> [B, P+L, D], scaled by sqrt(D)."""
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
        if self.step_emb is not None:
            if step is None:
                raise ValueError("this model embeds the supervision step; pass `step`")
            row = (step.long().clamp(1, self.step_emb.shape[0]) - 1)
            x = x + self.step_emb.to(self.dtype)[row].unsqueeze(1)
        return self.embed_scale * x

    @property
    def net_calls(self) -> int:
        """Net applications per supervision step at the model's depth."""
        return self.calls()[0]

    def step_flops(self, training: bool, depth: tuple[int, int] | None = None) -> float:
        """Matmul FLOPs per example of one supervision step: net calls x the net's forward cost, plus 2x the
        forward cost of the calls that are backpropagated when training (see recur.models.layers.Stack.flops)."""
        per_call = self.stack_flops
        head = 2 * self.length * self.cfg.hidden * self.head.weight.shape[0]
        net, grad = self.calls(depth)
        fwd = net * per_call + head
        return fwd + 2 * (grad * per_call + head) if training else fwd

    @property
    def stack_flops(self) -> float:
        c = self.cfg
        return Stack.flops(c.hidden, c.expansion, self.length, c.mixer == "mlp_t", c.layers, c.ffn_multiple)

    def readout(self, h: torch.Tensor) -> StepOutput:
        """Answer logits [B, L, V] from the puzzle positions, halting logits from position 0."""
        q = self.q_head(h[:, 0]).float()  # [B, 2]
        return StepOutput(logits=self.head(h)[:, self.prefix_len:], q_halt=q[:, 0], q_continue=q[:, 1])
