"""Recurrent depth (Geiping et al. 2025, arXiv 2502.05171, "Huginn") and the hybrid's learned exit.

    e   = prelude(x)                                   # P sandwich blocks, once
    s_0 ~ TruncNormal(0, 1, +-3)                       # random; or the previous token's final state (warm start)
    s_i = core(adapter([s_(i-1); e]))                  # R sandwich blocks, i = 1..r; e re-injected every iteration
    h   = coda(norm(s_r))                              # C sandwich blocks, then the model's final norm and head

Training runs r iterations (the engine draws r per step with `sample_depth`) and backpropagates only the last
k = model.lm.backprop_depth (recur.recursion.unroll). Without a generator s_0 is a fixed draw per position (seed 0),
so evaluation is deterministic and a cached decode reproduces the full forward exactly.

Adaptive exit (evaluation mode, model.lm.exit): after every iteration each token still running checks its criterion
(Huginn's defaults: KL 1e-3, latent 0.03, entropy 1e-3, argmax stable 5 steps) and freezes when it fires; the depth
never exceeds r. A frozen token keeps its state, its output and its keys and values from its last iteration, so
later tokens (and later iterations) attend to those. Decoding keeps one cache slot per core layer and iteration
(a token that exited early fills its later iterations' slots with its last entries), which makes token-by-token
decoding with exits equal to this parallel forward with exits. Criteria on the output distribution (kl, entropy,
argmax) run the coda after every iteration and cache it per iteration in the same way; the latent criteria
(latent, router) run the coda once on the final state. `kv_budget` < r (recur.generate) makes iteration i share
slot (i-1) mod budget: Huginn's KV-cache sharing, an approximation that saves memory.

The hybrid (model.lm.exit_router, in neither paper): a linear + sigmoid router reads the (detached) core state after
every iteration, its change since the previous one and the log of that change's relative size, and learns by BCE
whether the KL criterion would exit there (computed without gradients from the
readouts of every iteration); at test time exit = router exits when sigmoid > 0.5, without computing any readout.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..errors import RecurError
from ..recursion import unroll
from .layers import KV, Linear, LMCache, RMSNorm, SandwichBlock

EXIT_DEFAULTS = {"kl": 1e-3, "latent": 0.03, "entropy": 1e-3, "argmax": 5, "router": 0.5}
"""Reference thresholds of the exit criteria (Huginn's code at 59e0b69; the paper uses KL 5e-4)."""
READOUT_EXITS = ("kl", "entropy", "argmax")


def sample_depth(mean: float, sigma: float, generator: torch.Generator) -> int:
    """Huginn's training depth: lambda ~ LogNormal(ln(mean) - sigma^2/2, sigma), r = Poisson(lambda) + 1.
    E[lambda] = mean, so E[r] = mean + 1; r >= 1 always."""
    mu = math.log(mean) - sigma**2 / 2
    lam = math.exp(mu + sigma * torch.randn((), generator=generator).item())
    return int(torch.poisson(torch.tensor(lam), generator=generator).item()) + 1


def kl_step(prev: torch.Tensor | None, logp: torch.Tensor) -> torch.Tensor:
    """KL(prev || current) over the last axis of log-probabilities; prev None = the uniform distribution."""
    if prev is None:
        return -math.log(logp.shape[-1]) - logp.mean(-1)
    return (prev.exp() * (prev - logp)).sum(-1)


def truncated_normal(shape, generator: torch.Generator, bound: float = 3.0) -> torch.Tensor:
    """Unit normal truncated to [-bound, bound] by inverting the CDF, drawn on the generator's device."""
    a, b = math.erf(-bound / math.sqrt(2)), math.erf(bound / math.sqrt(2))
    u = torch.rand(shape, generator=generator, device=generator.device) * (b - a) + a
    return (torch.erfinv(u) * math.sqrt(2)).clamp(-bound, bound)


class ExitRule:
    """One exit criterion's running state over the iterations of one call."""

    def __init__(self, kind: str, threshold: float | None, s0: torch.Tensor):
        if kind not in EXIT_DEFAULTS:
            raise RecurError(f"unknown exit criterion '{kind}' (choices: none, {', '.join(EXIT_DEFAULTS)})")
        self.kind, self.t = kind, threshold or EXIT_DEFAULTS[kind]
        self.prev_s = s0
        self.prev_logp: torch.Tensor | None = None  # the uniform distribution before the first iteration
        self.prev_entropy = torch.tensor(100.0, device=s0.device)
        self.prev_arg = torch.full(s0.shape[:2], -1, dtype=torch.long, device=s0.device)
        self.stable = torch.zeros(s0.shape[:2], dtype=torch.long, device=s0.device)

    def __call__(self, s: torch.Tensor, logits: torch.Tensor | None, router_logit: torch.Tensor | None) -> torch.Tensor:
        """[B, S] bool: the criterion fires after this iteration (state s, readout logits, exit-router logit)."""
        if self.kind == "latent":
            value = (s - self.prev_s).float().norm(dim=-1) / s.float().norm(dim=-1)
            self.prev_s = s
            return value < self.t
        if self.kind == "router":
            return torch.sigmoid(router_logit) > self.t
        logp = F.log_softmax(logits.float(), dim=-1)
        if self.kind == "kl":  # KL(previous || current), as Huginn
            value = kl_step(self.prev_logp, logp)
            self.prev_logp = logp
            return value < self.t
        if self.kind == "entropy":
            entropy = -(logp.exp() * logp).sum(-1)
            value = (entropy - self.prev_entropy).abs()
            self.prev_entropy = entropy
            return value < self.t
        arg = logp.argmax(-1)
        self.stable = torch.where(arg == self.prev_arg, self.stable + 1, 0)
        self.prev_arg = arg
        return self.stable >= self.t


class Looped(nn.Module):
    """Prelude, core and coda of the recurrent family, plus the hybrid's exit router."""

    recompute = False  # recompute backpropagated core iterations in backward (train.recompute; see recursion.unroll)

    def __init__(self, cfg: ModelConfig, context: int):
        super().__init__()
        c, D = cfg.lm, cfg.hidden
        self.lm = c

        def blocks(n: int) -> nn.ModuleList:
            return nn.ModuleList(SandwichBlock(D, cfg.heads, cfg.expansion, cfg.norm_eps) for _ in range(n))

        self.prelude, self.core, self.coda = blocks(c.prelude), blocks(c.core), blocks(c.coda)
        self.adapter = Linear(2 * D, D)  # concat([s, e]) -> D, every iteration
        self.core_norm = RMSNorm(D, cfg.norm_eps)  # Huginn reuses its final norm here; recur gives it its own weight
        # reads [s_i; s_i - s_(i-1); log of their relative change]: what the latent criterion sees, and the state
        # itself (a router on s_i alone learned the KL exit to 63% accuracy, exiting early on the wrong tokens)
        self.exit_router = Linear(2 * D + 1, 1, bias=True) if c.exit_router else None
        if self.exit_router is not None:
            with torch.no_grad():  # sigmoid 0.5: no exits until it has learned something
                self.exit_router.weight.zero_()
        self.register_buffer("s0_table", truncated_normal((context, D), torch.Generator().manual_seed(0)),
                             persistent=False)

    def forward(self, e: torch.Tensor, rope, start: int, cache: LMCache | None, readout, *, depth=None, n_grad=None,
                exit=None, threshold=None, generator=None, init_state=None):
        from .lm import LMOutput  # the output type lives with the model skeleton

        c = self.lm
        B, S, D = e.shape
        r = depth or c.mean_depth
        kind = "none" if self.training else (exit or c.exit)
        if kind == "router" and self.exit_router is None:
            raise RecurError("exit=router needs a model trained with model.lm.exit_router=true")
        if cache is not None:  # the coda's cache layout follows the criterion, so one cache keeps one kind
            each = kind in READOUT_EXITS
            if cache.coda_per_iteration is None:
                cache.coda_per_iteration = each
            elif cache.coda_per_iteration != each:
                raise RecurError(f"this cache was filled {'with' if not each else 'without'} a readout exit "
                                 f"criterion (kl, entropy, argmax); continue it with the same kind of exit")
        for j, blk in enumerate(self.prelude):
            e = blk(e, rope, None if cache is None else KV(start, slot=cache.slot(("prelude", j))))
        if init_state is not None:
            s0 = init_state.to(e.dtype)
        elif generator is not None:
            s0 = truncated_normal((B, S, D), generator).to(e.device, e.dtype)
        else:
            s0 = self.s0_table[start:start + S].to(e.dtype).expand(B, S, D)
        if kind == "none":
            s, logits, losses, stats = self._fixed(e, s0, rope, start, cache, readout, r, min(n_grad or c.backprop_depth, r))
            steps = torch.full((B, S), r, dtype=torch.long, device=e.device)
        else:
            s, logits, steps = self._adaptive(e, s0, rope, start, cache, readout, r, ExitRule(kind, threshold, s0))
            losses, stats = {}, {}
        stats["depth"] = steps.float().mean()
        stats["layers"] = c.prelude + c.coda + c.core * stats["depth"]
        return LMOutput(logits=logits, losses=losses, stats=stats, depth=steps, state=s)

    def _iterate(self, s, e, rope, slot_kv):
        """One core iteration: s <- core(adapter([s; e])); slot_kv(j) gives core layer j's KV."""
        x = self.adapter(torch.cat([s, e], dim=-1))
        for j, blk in enumerate(self.core):
            x = blk(x, rope, slot_kv(j))
        return x

    def _coda(self, s, rope, kv):
        h = self.core_norm(s)
        for j, blk in enumerate(self.coda):
            h = blk(h, rope, kv(j))
        return h

    def _fixed(self, e, s0, rope, start, cache, readout, r, k):
        budget = cache.budget if cache is not None else 1
        trace = [] if self.training and self.exit_router is not None else None

        def iteration(i):
            def update(s):
                s = self._iterate(s, e, rope, lambda j: None if cache is None else
                                  KV(start, slot=cache.slot(("core", j, i % budget))))
                if trace is not None:
                    trace.append(s)
                return s
            return update

        s = unroll([iteration(i) for i in range(r)], s0, k, self.recompute)
        logits = readout(self._coda(s, rope, lambda j: None if cache is None else
                                    KV(start, slot=cache.slot(("coda", j)))))
        losses, stats = {}, {}
        if trace is not None:
            losses, stats = self._exit_router_loss(trace, s0, rope, readout)
        return s, logits, losses, stats

    def _exit_logit(self, s: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """The exit router's logit [B, S] after an iteration that took prev [B, S, D] to s."""
        d = s - prev
        change = torch.log((d.float().norm(dim=-1) / s.float().norm(dim=-1).clamp_min(1e-6)).clamp_min(1e-6))
        return self.exit_router(torch.cat((s, d, change.unsqueeze(-1).to(s.dtype)), -1)).squeeze(-1).float()

    def _exit_router_loss(self, trace, s0, rope, readout):
        """BCE of the exit router after every iteration against the KL criterion's decision there."""
        with torch.no_grad():
            prev, targets = None, []
            for s in trace:
                logp = F.log_softmax(readout(self._coda(s, rope, lambda j: None)).float(), dim=-1)
                targets.append(kl_step(prev, logp) < self.lm.router_target_kl)
                prev = logp
            target = torch.stack(targets).float()  # [r, B, S]
        z = torch.stack([self._exit_logit(s.detach(), prev.detach())
                         for s, prev in zip(trace, [s0] + trace[:-1])])  # [r, B, S]
        loss = F.binary_cross_entropy_with_logits(z, target)
        with torch.no_grad():
            stats = {"exit_target_share": target.mean(), "exit_router_acc": ((z > 0).float() == target).float().mean()}
        return {"exit_bce": loss}, stats

    def _adaptive(self, e, s0, rope, start, cache, readout, r, rule: ExitRule):
        B, S, _ = e.shape
        if cache is None:  # one slot per layer holds each token's latest keys within this call
            cache = LMCache(B, start + S, self.core[0].attn.heads, self.core[0].attn.head_dim, e.dtype, e.device, 1)
        budget, each = cache.budget, rule.kind in READOUT_EXITS
        frozen = torch.zeros(B, S, dtype=torch.bool, device=e.device)
        steps = torch.full((B, S), r, dtype=torch.long, device=e.device)
        s, logits, last = s0, None, r - 1

        def kv(part, i):
            return lambda j: KV(start, slot=cache.slot((part, j, i % budget)),
                                hold=cache.slot((part, j, (i - 1) % budget)) if i else None, hold_mask=frozen)

        for i in range(r):
            prev = s
            s = torch.where(frozen.unsqueeze(-1), s, self._iterate(s, e, rope, kv("core", i)))
            step_logits = readout(self._coda(s, rope, kv("coda", i))) if each else None
            if each:
                logits = step_logits if logits is None else torch.where(frozen.unsqueeze(-1), logits, step_logits)
            router_logit = self._exit_logit(s, prev) if rule.kind == "router" else None
            now = ~frozen & rule(s, step_logits, router_logit)
            steps = torch.where(now, i + 1, steps)
            frozen = frozen | now
            if bool(frozen.all()):
                last = i
                break
        parts = ("core", "coda") if each else ("core",)
        for i in range(last + 1, min(budget, r)):  # later iterations' slots read these tokens' last entries
            for part in parts:
                blocks = self.core if part == "core" else self.coda
                for j in range(len(blocks)):
                    cache.slot((part, j, i)).copy_from(cache.slot((part, j, last % budget)), start, start + S)
        if not each:
            logits = readout(self._coda(s, rope, lambda j: KV(start, slot=cache.slot(("coda", j)))))
        return s, logits, steps
