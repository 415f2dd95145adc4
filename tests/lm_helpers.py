"""Shared helpers of the language-model tests: tiny models of every variant, token batches, cached decoding."""

import pytest
import torch

from recur.config import LMConfig, ModelConfig
from recur.models import build_model

V, S = 24, 16


@pytest.fixture
def one_thread():
    """Tiny shapes run fastest on one thread, and far faster than on two when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


LOOPED = dict(family="recurrent", prelude=1, core=2, coda=1, mean_depth=4, backprop_depth=2)
VARIANTS = {
    "vanilla": dict(),
    "vanilla_untied": dict(tie_embeddings=False),
    "cycle": dict(sharing="cycle", recursions=2),
    "sequence": dict(sharing="sequence", recursions=2),
    "middle_cycle": dict(sharing="middle_cycle", recursions=2),
    "middle_cycle_share": dict(sharing="middle_cycle", recursions=2, kv="share"),
    "sequence_share": dict(sharing="sequence", recursions=2, kv="share"),
    "expert": dict(sharing="middle_cycle", recursions=2, router="expert"),
    "expert_share": dict(sharing="middle_cycle", recursions=2, router="expert", kv="share"),
    "expert_cycle3": dict(sharing="cycle", layers=6, recursions=3, router="expert", capacity="1,0.5,0.25"),
    "token": dict(sharing="cycle", recursions=2, router="token"),
    "token_share": dict(sharing="middle_cycle", recursions=2, router="token", kv="share"),
    "looped": LOOPED,
    "hybrid": dict(LOOPED, exit_router=True),
}
EXITS = {"kl": (0.02, 0.2), "latent": (0.1, 0.5), "entropy": (0.02, 0.2), "argmax": (3, 1), "router": (0.6, 0.4)}
"""criterion: (tight, loose) thresholds; a loose one may only exit earlier."""


def lm(name_or_kw="vanilla", **extra) -> torch.nn.Module:
    kw = dict(VARIANTS[name_or_kw]) if isinstance(name_or_kw, str) else dict(name_or_kw)
    kw.update(extra)
    layers = kw.pop("layers", 4)
    cfg = ModelConfig(arch="lm", hidden=32, heads=4, layers=layers, expansion=2, lm=LMConfig(**kw))
    return build_model(cfg, {"vocab_size": V, "seq_len": S, "num_puzzle_ids": 1})


def tokens(batch=2, length=S, seed=0):
    return torch.randint(1, V, (batch, length), generator=torch.Generator().manual_seed(seed))


def decode_in_pieces(model, x, first=5, **kw):
    """Prefill x[:, :first], then one call per token: logits and depths, concatenated."""
    cache = model.new_cache(x.shape[0], depth=kw.get("depth"))
    outs = [model(x[:, :first], cache=cache, **kw)]
    outs += [model(x[:, i:i + 1], cache=cache, **kw) for i in range(first, x.shape[1])]
    return torch.cat([o.logits for o in outs], 1), torch.cat([o.depth for o in outs], 1)
