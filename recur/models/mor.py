"""Mixture-of-Recursions routers (Bae et al. 2025, arXiv 2507.10524): which tokens take the shared block at each
recursion. recur.models.lm runs them; `block(h, r, active, rope)` applies the shared block once, with attention only
among the `active` tokens.

Expert choice (model.lm.router = expert), one linear router per recursion r:
    g = sigmoid(router_r(h));  sel = top-k of g among the tokens selected at r-1 (k = capacity_r * S)
    h[sel] += alpha * g[sel] * block(h[sel])
    aux = BCE(router logits, 1[token in top-k]) over the candidates
Top-k over the sequence lets a token's selection depend on later tokens: training is not causal (MoR issue #11).
The BCE teaches the router the top-k decision per token, so evaluation and generation select by the causal rule
sigmoid > 0.5 (hierarchically: only tokens selected at r-1), as the MoR paper's inference does.

Token choice (router = token): one router before recursion 1 gives each token a depth d in 1..N_r (argmax of a
softmax, causal) and a weight w = p_d; the token takes d recursions and ends as h + w * block^d(h), as in the MoR
code. A balancing loss sum_i P_i * f_i (mean probability of depth i times N_r * the share of tokens given depth i)
keeps the depths in use.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Linear


class ExpertRouters(nn.Module):
    """One scalar linear router per recursion, with its capacity."""

    def __init__(self, width: int, capacity: list[float], alpha: float, aux_weight: float):
        super().__init__()
        self.capacity, self.alpha, self.aux_weight = capacity, alpha, aux_weight
        self.routers = nn.ModuleList(Linear(width, 1) for _ in capacity)


class TokenRouter(nn.Module):
    """A linear router to N_r depth logits, read once before the first recursion."""

    def __init__(self, width: int, recursions: int, balance_weight: float):
        super().__init__()
        self.recursions, self.balance_weight = recursions, balance_weight
        self.proj = Linear(width, recursions)


Block = Callable[..., torch.Tensor]


def expert_choice(routers: ExpertRouters, h: torch.Tensor, block: Block, rope, training: bool, gather: bool):
    """Run the N_r routed recursions on h [B, S, D]. Returns (h, depth [B, S], losses, stats).

    `gather`: run the block on the k selected tokens only (training, no cache): the compute MoR saves."""
    B, S, D = h.shape
    cand = torch.ones(B, S, dtype=torch.bool, device=h.device)
    depth = torch.zeros(B, S, dtype=torch.long, device=h.device)
    bce, agree, stats, k_prev = [], [], {}, S
    for r, (router, cap) in enumerate(zip(routers.routers, routers.capacity)):
        z = router(h).squeeze(-1).float()  # [B, S] router logits
        g = torch.sigmoid(z)
        if training:
            k = min(max(1, int(cap * S)), k_prev)  # hierarchical: never more than were candidates
            idx = g.masked_fill(~cand, -1.0).topk(k, dim=1).indices.sort(dim=1).values  # [B, k], causal order
            sel = torch.zeros_like(cand).scatter(1, idx, True)
            bce.append(F.binary_cross_entropy_with_logits(z[cand], sel[cand].float()))
            with torch.no_grad():
                agree.append(((g > 0.5) == sel)[cand].float().mean())
            k_prev = k
        else:
            sel = cand & (g > 0.5)
        gate = (routers.alpha * g).to(h.dtype).unsqueeze(-1)  # [B, S, 1]
        if training and gather:
            ix = idx.unsqueeze(-1).expand(-1, -1, D)
            h_sel = h.gather(1, ix)  # [B, k, D]
            out = block(h_sel, r, None, (rope[0][idx], rope[1][idx]))  # causal among the selected
            h = h.scatter(1, ix, h_sel + gate.gather(1, idx.unsqueeze(-1)) * out)
        else:
            h = torch.where(sel.unsqueeze(-1), h + gate * block(h, r, sel), h)
        depth = depth + sel.long()
        cand = sel
        stats[f"select_r{r + 1}"] = sel.float().mean().detach()
    losses = {"router_bce": routers.aux_weight * torch.stack(bce).sum()} if bce else {}
    if agree:
        stats["router_acc"] = torch.stack(agree).mean()
    stats["dead_share"] = (depth == 0).float().mean().detach()
    return h, depth, losses, stats


def token_choice(router: TokenRouter, h: torch.Tensor, block: Block, training: bool):
    """Give every token of h [B, S, D] its depth and run it that many recursions. Returns (h, depth, losses, stats)."""
    n = router.recursions
    probs = torch.softmax(router.proj(h).float(), dim=-1)  # [B, S, N_r]
    choice = probs.argmax(-1)  # [B, S], depth - 1
    weight = probs.gather(-1, choice.unsqueeze(-1)).to(h.dtype)  # [B, S, 1]
    depth = choice + 1
    x = h
    for r in range(n):
        active = None if r == 0 else depth > r  # every token takes recursion 1
        out = block(x, r, active)
        x = out if active is None else torch.where(active.unsqueeze(-1), out, x)
    share = F.one_hot(choice, n).float().mean((0, 1))  # [N_r] share of tokens per depth
    losses = {"balance": router.balance_weight * (probs.mean((0, 1)) * n * share).sum()} if training else {}
    stats = {f"depth_share_{d + 1}": share[d].detach() for d in range(n)}
    return h + weight * x, depth, losses, stats
