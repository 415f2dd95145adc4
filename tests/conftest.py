import pytest
import torch

from recur.config import ModelConfig


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_model_cfg(**kw) -> ModelConfig:
    base = dict(hidden=32, heads=4, layers=2, T=3, n=2, prefix_len=2, puzzle_emb_dim=16)
    base.update(kw)
    return ModelConfig(**base)


INFO = {"vocab_size": 6, "seq_len": 16, "num_puzzle_ids": 3, "size": 4}
