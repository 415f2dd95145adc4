"""Optimizers, learning-rate schedule and EMA, as the reference recipes use them.

- AdamATan2 (Everett et al. 2024, the `adam-atan2` package's formula) for the dense weights.
- Sign-SGD with decoupled weight decay for the per-puzzle embedding rows (sparse gradients).
- Linear warm-up, then constant or cosine.
- EMA of the dense weights (puzzle embeddings excluded, as the reference keeps them as buffers).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimConfig

SPARSE_PREFIX = "puzzle_emb"  # parameters with this name get sparse gradients and sign-SGD


class AdamATan2(torch.optim.Optimizer):
    """Adam with atan2 in place of the epsilon-guarded division. Per parameter, at step t:

        p <- p * (1 - lr*wd)
        m <- lerp(m, g, 1-b1);  v <- lerp(v, g*g, 1-b2)
        p <- p - lr/(1-b1^t) * atan2(m, sqrt(v) / sqrt(1-b2^t))
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 1e-2):
        if lr < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid AdamATan2 settings lr={lr} betas={betas} weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            b1, b2 = group["betas"]
            lr, wd = group["lr"], group["weight_decay"]
            for p in params:
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float32)
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                st["step"] += 1
            m = [self.state[p]["exp_avg"] for p in params]
            v = [self.state[p]["exp_avg_sq"] for p in params]
            g = [p.grad for p in params]
            torch._foreach_mul_(params, 1 - lr * wd)
            torch._foreach_lerp_(m, g, 1 - b1)
            torch._foreach_lerp_(v, torch._foreach_mul(g, g), 1 - b2)
            for p, mi, vi in zip(params, m, v):
                t = self.state[p]["step"].item()
                denom = vi.sqrt() / math.sqrt(1 - b2**t)
                p.add_(torch.atan2(mi, denom), alpha=-lr / (1 - b1**t))


class SignSGD(torch.optim.Optimizer):
    """p[rows] <- p[rows]*(1 - lr*wd) - lr*sign(g[rows]) on the rows a sparse gradient touches.

    Duplicate rows (several examples of one puzzle) are summed before the sign, as in the reference. A
    bfloat16 table (model.puzzle_emb_dtype) is updated in float32 and rounded back stochastically: a step
    smaller than bfloat16's spacing (lr*wd*p is, at the ARC recipe's 1e-3 of p) moves the row with the
    matching probability instead of never. The rounding draws depend on (seed, step count), both in the
    optimizer's param groups, so a resumed run continues exactly.
    """

    def __init__(self, params, lr: float = 1e-2, weight_decay: float = 0.1, seed: int = 0):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, rounding_seed=seed, steps=0))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            group["steps"] = group.get("steps", 0) + 1  # (absent from checkpoints written before bfloat16 tables)
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.coalesce()
                rows, vals = g.indices()[0], g.values()
                upd = p[rows].float() * (1 - group["lr"] * group["weight_decay"]) - group["lr"] * vals.float().sign()
                if p.dtype == torch.bfloat16:
                    upd = _stochastic_bf16(upd, group.get("rounding_seed", 0) * 1_000_003 + group["steps"])
                p.index_copy_(0, rows, upd.to(p.dtype))


def _stochastic_bf16(x: torch.Tensor, seed: int) -> torch.Tensor:
    """x (float32) rounded to a bfloat16 neighbour with probability in proportion to its nearness: random low 16
    bits are added to its float32 bits before they are cut off. The draws depend on (seed, step) only."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 1 << 16, x.shape, generator=gen, dtype=torch.int32).to(x.device)
    bits = (x.contiguous().view(torch.int32) + noise) & -65536  # keep the high 16 bits: a bfloat16 value
    return bits.view(torch.float32)


def build_optimizers(model: nn.Module, cfg: OptimConfig, seed: int = 0) -> list[torch.optim.Optimizer]:
    dense = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(SPARSE_PREFIX)]
    sparse = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith(SPARSE_PREFIX)]
    opts: list[torch.optim.Optimizer] = []
    if dense and cfg.optimizer == "adamw":
        opts.append(torch.optim.AdamW(dense, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, foreach=True))
    elif dense:  # (none: train.freeze trains only the puzzle embeddings)
        opts.append(AdamATan2(dense, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay))
    if sparse:
        opts.append(SignSGD(sparse, lr=cfg.puzzle_emb_lr, weight_decay=cfg.puzzle_emb_weight_decay, seed=seed))
    return opts


def lr_factor(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Multiplier of the base learning rate for optimizer step `step` (1-based), as the reference computes it."""
    if step < cfg.warmup:
        return step / cfg.warmup
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - cfg.warmup) / max(1, total_steps - cfg.warmup)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def set_lr(opts: list[torch.optim.Optimizer], cfg: OptimConfig, step: int, total_steps: int) -> float:
    f = lr_factor(step, cfg, total_steps)
    for opt in opts:
        base = cfg.puzzle_emb_lr if isinstance(opt, SignSGD) else cfg.lr
        for group in opt.param_groups:
            group["lr"] = base * f
    return cfg.lr * f


class EMA:
    """shadow <- rate*shadow + (1-rate)*weights after every optimizer step (dense weights only)."""

    def __init__(self, model: nn.Module, rate: float):
        self.rate = rate
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters()
                       if p.requires_grad and not n.startswith(SPARSE_PREFIX)}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        names = list(self.shadow)
        if not names:  # train.freeze: only the puzzle embeddings train, and they are not averaged
            return
        torch._foreach_lerp_([self.shadow[n] for n in names], [params[n].detach() for n in names], 1 - self.rate)

    def weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with the averaged weights in place of the live ones."""
        return {k: self.shadow.get(k, v) for k, v in model.state_dict().items()}
