"""Token-by-token decoding of the language models (recur.models.lm) with their KV cache.

The prompt goes through the model in one call (the prefill); every further token is one call on that token alone,
which reads the cached keys and values of all earlier positions. With the model's exact cache modes this gives the
same logits as recomputing the whole sequence (tested), so greedy decoding reproduces teacher-forced argmaxes.
`stream` yields each token with the depth that produced it (recursions, or core iterations for the recurrent
family, where `exit` picks a per-token adaptive exit). Sampling draws from one seeded generator on the CPU, so the
same seed gives the same text on every device.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .errors import RecurError


@dataclass
class Token:
    """One decoding step."""

    token: torch.Tensor
    """[B] int64 the next token of each sequence (PAD = 0 once a sequence has emitted `stop`)."""
    depth: torch.Tensor
    """[B] int64 recursions or core iterations the token's prediction used (0 after `stop`)."""


@dataclass
class Generation:
    """All decoding steps of `generate`."""

    tokens: torch.Tensor
    """[B, N] int64 generated tokens (the prompt excluded)."""
    depths: torch.Tensor
    """[B, N] int64 the depth each of them used."""


def sample(logits: torch.Tensor, temperature: float, top_k: int, generator: torch.Generator) -> torch.Tensor:
    """Next tokens [B] from logits [B, V]: argmax at temperature 0, else softmax(logits/temperature) restricted to
    the top_k most likely tokens (0 = all), drawn on the CPU from `generator`."""
    logits = logits.float().cpu()
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -torch.inf)
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)


def stream(model, prompt, max_new_tokens: int, *, temperature: float = 0.0, top_k: int = 0, seed: int = 0,
           depth: int | None = None, exit: str | None = None, threshold: float | None = None,
           warm_start: bool = False, kv_budget: int = 0, stop: int | None = None) -> Iterator[Token]:
    """Decode up to `max_new_tokens` after `prompt` (int tokens [B, P], or one sequence as a list), one Token per step.

    Recurrent family only: `depth` r (default model.lm.mean_depth), `exit`/`threshold` (default model.lm.exit),
    `warm_start` (s_0 of each new token = the previous token's final core state, Huginn's "continuous CoT"; the
    prompt starts from the usual s_0), `kv_budget` (iteration slots per core layer, see LanguageModel.new_cache).
    `stop`: a sequence that emits this token is finished; decoding ends when all are. The model is in evaluation
    mode while the iterator runs and gets its mode back when the iterator ends."""
    prompt = torch.as_tensor(prompt, dtype=torch.long)
    prompt = prompt.unsqueeze(0) if prompt.dim() == 1 else prompt
    B, P = prompt.shape
    if max_new_tokens < 1:
        raise RecurError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if P == 0:
        raise RecurError("the prompt is empty; start it with at least one token (e.g. the tokenizer's BOS)")
    if P + max_new_tokens > model.context:
        raise RecurError(f"the prompt's {P} tokens plus max_new_tokens={max_new_tokens} exceed the model's "
                         f"context of {model.context} tokens")
    recurrent = model.looped is not None
    if not recurrent and (depth is not None or exit is not None or warm_start or kv_budget):
        raise RecurError("depth, exit, warm_start and kv_budget apply to model.lm.family=recurrent only")
    kw = dict(depth=depth, exit=exit, threshold=threshold) if recurrent else {}
    device = model.embed.device
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        cache = model.new_cache(B, device, kv_budget=kv_budget, depth=depth)
        out = _step(model, prompt.to(device), cache, None, kw)
        done = torch.zeros(B, dtype=torch.bool)
        for n in range(max_new_tokens):
            token = sample(out.logits[:, -1], temperature, top_k, generator)
            used = out.depth[:, -1].cpu()
            token, used = torch.where(done, 0, token), torch.where(done, 0, used)
            if stop is not None:
                done = done | (token == stop)
            yield Token(token=token, depth=used)
            if n + 1 == max_new_tokens or bool(done.all()):
                break
            state = out.state[:, -1:] if warm_start else None
            out = _step(model, token.to(device).unsqueeze(1), cache, state, kw)
    finally:
        model.train(was_training)


@torch.no_grad()
def _step(model, tokens: torch.Tensor, cache, state, kw: dict):
    return model(tokens, cache=cache, init_state=state, **kw) if state is not None else model(tokens, cache=cache, **kw)


def generate(model, prompt, max_new_tokens: int, **options) -> Generation:
    """All of `stream`'s steps at once (same options)."""
    steps = list(stream(model, prompt, max_new_tokens, **options))
    return Generation(tokens=torch.stack([s.token for s in steps], 1), depths=torch.stack([s.depth for s in steps], 1))
