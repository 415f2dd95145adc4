"""Causal language models that spend recursion as compute depth: one decoder-only family (model.arch = lm),
whose variants are the flags of model.lm.

    e = sqrt(D) * embed(tokens)                                         # [B, S, D]
    transformer family:  h = tail(block^N_r(head(e)))                   # head/tail: unique layers, block: shared
        sharing none = L unique layers (vanilla); cycle, sequence, middle_cycle share weights (MoR's schemes);
        router expert / token = Mixture-of-Recursions: per recursion only some tokens go through the block
        (recur.models.mor)
    recurrent family:    h = coda(s_r),  s_i = core(adapter([s_(i-1); prelude(e)])),  s_0 random  (recur.models.looped)
    logits = head(norm(h))                                              # tied: the embedding transposed

One call, `model(tokens, ...) -> LMOutput`, serves training, evaluation and decoding: with an LMCache (from
`new_cache`) it processes the next tokens of cached sequences (positions cache.length..), so generation is a
prefill call followed by one call per token (recur.generate). Every attention layer application keeps its own
cache slot; with model.lm.kv = share a block applied again reads its first application's slot instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig, capacities
from ..errors import RecurError
from .layers import KV, DecoderBlock, Linear, LMCache, RMSNorm, block_flops, rope_tables, trunc_normal_
from .looped import Looped
from .mor import ExpertRouters, TokenRouter, expert_choice, token_choice


@dataclass
class LMOutput:
    """What one forward call returns."""

    logits: torch.Tensor
    """[B, S, V] next-token logits."""
    losses: dict[str, torch.Tensor]
    """Named auxiliary losses, already multiplied by their config weights; add them to the next-token loss."""
    stats: dict[str, torch.Tensor]
    """Named scalar diagnostics (detached): depth, layers, router selection shares, ..."""
    depth: torch.Tensor
    """[B, S] int64: recursions (transformer family: applications of the shared block; 1 for vanilla) or core
    iterations (recurrent family) each token used."""
    state: torch.Tensor | None = None
    """[B, S, D] the recurrent core's final state (recurrent family): warm-starts the next token's s_0."""


@dataclass(frozen=True)
class Plan:
    """The transformer family's layer order: head, then core repeated `repeats` times, then tail (block indices)."""

    blocks: int
    head: tuple[int, ...]
    core: tuple[int, ...]
    tail: tuple[int, ...]
    repeats: int

    @property
    def applications(self) -> int:
        return len(self.head) + len(self.core) * self.repeats + len(self.tail)


def layer_plan(sharing: str, layers: int, recursions: int) -> Plan:
    """L layers' worth of applications under a sharing scheme (MoR's, with base depth L/N_r or (L-2)//N_r)."""
    n = recursions
    if sharing == "none":
        return Plan(layers, (), tuple(range(layers)), (), 1)
    if sharing == "cycle":  # | 0 1 | 0 1 | 0 1 |
        b = layers // n
        return Plan(b, (), tuple(range(b)), (), n)
    if sharing == "sequence":  # | 0 0 0 | 1 1 1 |
        b = layers // n
        return Plan(b, tuple(i for i in range(b) for _ in range(n)), (), (), n)
    b = (layers - 2) // n  # middle_cycle: | 0 | 1 2 | 1 2 | 3 |
    return Plan(b + 2, (0,), tuple(range(1, b + 1)), (b + 1,), n)


class LanguageModel(nn.Module):
    """model.arch = lm. `num_puzzle_ids` is accepted for recur.models.build_model and ignored."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int = 1,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        c, D = cfg.lm, cfg.hidden
        self.cfg, self.lm, self.dtype, self.vocab_size = cfg, c, dtype, vocab_size
        self.context = c.context or seq_len
        self.embed_scale = math.sqrt(D)
        # std 1/sqrt(D): a tied head then gives unit-variance logits; the input is scaled back to unit RMS
        self.embed = nn.Parameter(trunc_normal_(torch.empty(vocab_size, D), std=1 / self.embed_scale))
        self.head = None if c.tie_embeddings else Linear(D, vocab_size)
        self.norm = RMSNorm(D, cfg.norm_eps)
        cos, sin = rope_tables(D // cfg.heads, self.context, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.looped = Looped(cfg, self.context) if c.family == "recurrent" else None
        self.routers = None
        if self.looped is None:
            self.plan = layer_plan(c.sharing, cfg.layers, c.recursions)
            self.blocks = nn.ModuleList(DecoderBlock(D, cfg.heads, cfg.expansion, cfg.norm_eps)
                                        for _ in range(self.plan.blocks))
            if c.router == "expert":
                self.routers = ExpertRouters(D, capacities(c), c.alpha, c.router_aux_weight)
            elif c.router == "token":
                self.routers = TokenRouter(D, c.recursions, c.balance_weight)

    # ------------------------------------------------------------------------------------------ forward

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """Logits [B, S, V] of final hidden states [B, S, D]."""
        h = self.norm(h)
        return self.head(h) if self.head is not None else F.linear(h, self.embed.to(h.dtype))

    def new_cache(self, batch: int, device=None, kv_budget: int = 0, depth: int | None = None) -> LMCache:
        """An empty cache for `batch` sequences of up to `context` tokens. Recurrent family: `kv_budget` iteration
        slots per core layer (iteration i uses slot (i-1) mod budget: Huginn's KV-cache sharing); 0 = one per
        iteration of `depth` (default model.lm.mean_depth), which decodes exactly as the full forward."""
        H = self.cfg.heads
        budget = kv_budget or (depth or self.lm.mean_depth)
        return LMCache(batch, self.context, H, self.cfg.hidden // H, self.dtype, device or self.embed.device, budget)

    def forward(self, tokens: torch.Tensor, depth: int | None = None, n_grad: int | None = None, *,
                cache: LMCache | None = None, exit: str | None = None, threshold: float | None = None,
                generator: torch.Generator | None = None, init_state: torch.Tensor | None = None) -> LMOutput:
        """tokens [B, S] -> LMOutput. Recurrent family: `depth` r (default mean_depth), `n_grad` backpropagated
        iterations (default backprop_depth), `exit`/`threshold` override model.lm.exit in evaluation mode,
        `generator` draws s_0 (training; without one s_0 is a fixed per-position draw), `init_state` [B, S, D]
        replaces s_0 (warm start). With `cache`, tokens continue the cached sequences."""
        S = tokens.shape[1]
        start = cache.length if cache is not None else 0
        if start + S > self.context:
            raise RecurError(f"a sequence of {start + S} tokens exceeds the model's context of {self.context}")
        rope = (self.rope_cos[start:start + S], self.rope_sin[start:start + S])
        e = self.embed_scale * F.embedding(tokens.long(), self.embed.to(self.dtype))  # [B, S, D]
        if self.looped is not None:
            out = self.looped(e, rope, start, cache, self.readout, depth=depth, n_grad=n_grad, exit=exit,
                              threshold=threshold, generator=generator, init_state=init_state)
        else:
            if depth is not None or n_grad is not None or init_state is not None:
                raise ValueError("depth, n_grad and init_state are recurrent-family arguments")
            out = self._stack(e, rope, start, cache)
        if cache is not None:
            cache.length += S
        return out

    def _stack(self, h: torch.Tensor, rope, start: int, cache: LMCache | None) -> LMOutput:
        p, c = self.plan, self.lm
        share = c.kv == "share" and c.sharing != "none"
        if share and cache is None:  # later applications read the first one's keys: keep them for this call
            cache = self.new_cache(h.shape[0], h.device)
        counter, seen = [0], set()

        def apply(i: int, h: torch.Tensor, active: torch.Tensor | None = None, rope=rope) -> torch.Tensor:
            """One application of block i; only `active` tokens have keys there (None = all)."""
            counter[0] += 1
            if cache is None:
                kv = None if active is None else KV(start, active)
            elif share:
                kv = KV(start, active, cache.slot(("block", i)), read_only=i in seen)
                seen.add(i)
            else:
                kv = KV(start, active, cache.slot(("application", counter[0])))
            return self.blocks[i](h, rope, kv)

        def block(h: torch.Tensor, r: int, active: torch.Tensor | None, rope=rope) -> torch.Tensor:
            """The shared block once (recursion r, 0-based)."""
            for i in p.core:
                h = apply(i, h, active, rope)
            return h

        for i in p.head:
            h = apply(i, h)
        losses, stats = {}, {}
        if isinstance(self.routers, ExpertRouters):
            # gathering the selected tokens is what saves MoR's compute; shared keys need the dense path
            gather = self.training and cache is None
            h, depth, losses, stats = expert_choice(self.routers, h, block, rope, self.training, gather)
        elif isinstance(self.routers, TokenRouter):
            h, depth, losses, stats = token_choice(self.routers, h, block, self.training)
        else:
            for r in range(p.repeats if p.core else 0):
                h = block(h, r, None)
            depth = torch.full(h.shape[:2], p.repeats, dtype=torch.long, device=h.device)
        for i in p.tail:
            h = apply(i, h)
        with torch.no_grad():
            stats["depth"] = depth.float().mean()
            stats["layers"] = (len(p.head) + len(p.tail) + len(p.core) * depth.float()).mean()
        return LMOutput(logits=self.readout(h), losses=losses, stats=stats, depth=depth)

    # ------------------------------------------------------------------------------------------ costs

    def param_count(self) -> int:
        """Unique parameters (a tied head and shared blocks count once)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, depth: int | None = None, training: bool = False, n_grad: int | None = None,
                        context: int | None = None) -> float:
        """Matmul FLOPs per token (2 per multiply-add) over a sequence of `context` tokens (default: the model's),
        attention counted at the causal mean of (context+1)/2 keys. Training adds 2x the forward of everything that
        is backpropagated. Expert-choice MoR counts each recursion at its capacity share of tokens, attending
        among that share; token-choice assumes balanced depths; the recurrent family runs `depth` iterations
        (default mean_depth) of which `n_grad` (default backprop_depth) are backpropagated."""
        c, D, E = self.lm, self.cfg.hidden, self.cfg.expansion
        keys = ((context or self.context) + 1) / 2
        head = 2.0 * D * self.vocab_size
        if self.looped is not None:
            r = depth or c.mean_depth
            k = min(n_grad or c.backprop_depth, r)
            once = (c.prelude + c.coda) * block_flops(D, E, keys) + head
            core = c.core * block_flops(D, E, keys) + 2.0 * 2 * D * D  # + the adapter [s; e] -> D
            fwd = once + r * core
            if not training:
                return fwd
            extra = r * (c.coda * block_flops(D, E, keys) + head) if c.exit_router else 0.0  # no-grad KL readouts
            return fwd + 2 * (once + k * core) + extra
        p, layer = self.plan, block_flops(D, E, keys)
        if c.router == "expert":
            shares = capacities(c)
        elif c.router == "token":
            shares = [(c.recursions - r) / c.recursions for r in range(c.recursions)]
        else:
            shares = [1.0] * (p.repeats if p.core else 0)
        core = sum(s * len(p.core) * block_flops(D, E, keys * s) for s in shares)
        fwd = (len(p.head) + len(p.tail)) * layer + core + head
        return 3 * fwd if training else fwd

    def kv_bytes_per_token(self, depth: int | None = None, kv_budget: int = 0) -> float:
        """KV-cache bytes per generated token in the model's dtype: keys and values of every layer application that
        caches (MoR recursion-wise: the capacity share at each recursion; shared KV: the first application only;
        recurrent family: the prelude and coda plus one slot per core layer and iteration, or per budget slot)."""
        c = self.lm
        per = 2.0 * self.cfg.hidden * torch.empty((), dtype=self.dtype).element_size()
        if self.looped is not None:
            return per * (c.prelude + c.coda + c.core * (kv_budget or depth or c.mean_depth))
        p = self.plan
        if c.kv == "share":
            return per * p.blocks
        shares = (capacities(c) if c.router == "expert" else
                  [(c.recursions - r) / c.recursions for r in range(c.recursions)] if c.router == "token" else
                  [1.0] * (p.repeats if p.core else 0))
        return per * (len(p.head) + len(p.tail) + len(p.core) * sum(shares))
