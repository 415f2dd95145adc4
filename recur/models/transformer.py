"""The non-recursive baseline: a plain transformer trained by the same engine.

`layers` distinct blocks, applied once per supervision step to the carried answer:
y <- blocks(y + x), everything with gradients (the reference's `transformers_baseline`).
Matching a TRM's effective depth means layers = T*(n+1)*layers_TRM; matching its parameter
count means layers = layers_TRM (see the comparison presets).
"""

from __future__ import annotations

import torch

from ..config import ModelConfig
from .base import PuzzleModel


class Transformer(PuzzleModel):
    """State (y,), [B, P+L, D]."""


    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int,
                 dtype: torch.dtype = torch.float32):
        super().__init__(cfg, vocab_size, seq_len, num_puzzle_ids, dtype, ("y_init",))
        self.net = self.stack()

    def calls(self, depth: None = None) -> tuple[int, int]:
        """(net applications, backpropagated ones) per supervision step: one pass, with gradients."""
        return 1, 1

    def forward(self, state, inputs: torch.Tensor, puzzle_ids: torch.Tensor, step: torch.Tensor | None = None,
                trace: list | None = None, depth: None = None):
        y = self.net(state[0], self.embed_input(inputs, puzzle_ids, step), self.rope)
        out = self.readout(y)
        if trace is not None:
            trace.append(out)
        return (y.detach(),), out
