"""Model registry: `model.arch` in the config names one of these classes."""

from __future__ import annotations

import torch

from ..config import ModelConfig
from .lm import LanguageModel
from .transformer import Transformer
from .trm import TRM

REGISTRY = {"trm": TRM, "transformer": Transformer, "lm": LanguageModel}


def build_model(cfg: ModelConfig, info: dict, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Instantiate `cfg.arch` for a dataset described by `info` (vocab_size, seq_len, num_puzzle_ids)."""
    return REGISTRY[cfg.arch](cfg, vocab_size=info["vocab_size"], seq_len=info["seq_len"],
                              num_puzzle_ids=info["num_puzzle_ids"], dtype=dtype)
