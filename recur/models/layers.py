"""Shared building blocks: LeCun-truncated-normal linears, RMSNorm, SwiGLU, RoPE attention (non-causal for the
puzzle models; causal with a KV cache and key masks for the language models), post-norm, pre-norm and sandwich blocks.

Weights live in float32 and are cast to the activations' dtype at use, so a model runs in
bfloat16 on a GPU while its master weights (and optimizer) stay float32, as in the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel


def trunc_normal_(t: torch.Tensor, std: float = 1.0, bound: float = 2.0) -> torch.Tensor:
    """JAX-style truncated normal on [-bound, bound] standard deviations whose *resulting* std is `std`.

    torch.nn.init.trunc_normal_ truncates but does not rescale, so its std comes out ~12% low.
    """
    with torch.no_grad():
        if std == 0:
            return t.zero_()
        a, b = math.erf(-bound / math.sqrt(2)), math.erf(bound / math.sqrt(2))
        pdf = math.exp(-0.5 * bound**2) / math.sqrt(2 * math.pi)
        z = (b - a) / 2
        # variance of a unit normal truncated to [-bound, bound]: 1 - 2*bound*pdf/z
        std_corr = std / math.sqrt(1 - 2 * bound * pdf / z)
        t.uniform_(a, b).erfinv_().mul_(math.sqrt(2) * std_corr)
        return t.clip_(-bound * std_corr, bound * std_corr)


def rms_norm(h: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last axis, without a weight, computed in float32."""
    dtype = h.dtype
    h = h.float()
    return (h * torch.rsqrt(h.square().mean(-1, keepdim=True) + eps)).to(dtype)


def ffn_width(width: int, expansion: float, multiple: int = 256) -> int:
    """The SwiGLU inner width: round(expansion*2/3*width) rounded up to a multiple of `multiple` (the reference:
    256)."""
    return -(round(expansion * width * 2 / 3) // -multiple) * multiple


class Linear(nn.Module):
    """Bias-free (by default) linear with LeCun truncated-normal init, cast to the input's dtype."""

    def __init__(self, d_in: int, d_out: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_(torch.empty(d_out, d_in), std=d_in**-0.5))
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(h.dtype)
        return F.linear(h, self.weight.to(h.dtype), bias)


class SwiGLU(nn.Module):
    """down(silu(gate) * up) with one gate+up weight (the reference's layout, [2F, D]).

    Gate and up are two matmuls with the weight's halves (contiguous row blocks) rather than one matmul
    split in two: the element-wise silu and product then read contiguous tensors, and the backward needs no
    concatenation of their gradients (8-20% faster per SwiGLU on a CPU at the quickstart's shapes)."""

    def __init__(self, width: int, expansion: float, multiple: int = 256):
        super().__init__()
        self.inner = ffn_width(width, expansion, multiple)
        self.gate_up = Linear(width, 2 * self.inner)
        self.down = Linear(self.inner, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        w = self.gate_up.weight.to(h.dtype)
        gate, up = F.linear(h, w[:self.inner]), F.linear(h, w[self.inner:])
        return self.down(F.silu(gate) * up)


def rope_tables(head_dim: int, length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [length, head_dim] for rotate-half RoPE (frequencies repeated over both halves)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, S, H, Dh] rotated in float32 by cos/sin [S, Dh], returned in x's dtype."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (xf * cos.unsqueeze(-2) + rotated * sin.unsqueeze(-2)).to(x.dtype)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Non-causal SDPA over q, k, v [B, H, S, Dh]. A CPU in bfloat16 trains short sequences with the unfused kernel:
    the fused one's backward is 2-13x slower there below ~200 positions (torch 2.13), while from ~250 positions on
    the fused one is faster in both directions and does not hold the [B, H, S, S] probabilities (at ARC's 916
    positions and batch 8, over 2 GB for TRM's backpropagated calls). Without gradients the fused one is faster at
    every length (docs/benchmarks.md sections 10 and 12)."""
    if q.device.type == "cpu" and q.dtype == torch.bfloat16 and q.shape[-2] < 256 and q.requires_grad:
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)


class Attention(nn.Module):
    """Non-causal multi-head self-attention over every position (no mask: PAD is attended, as in TRM)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.qkv = Linear(width, 3 * width)
        self.out = Linear(width, width)

    def forward(self, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        B, S, D = h.shape
        q, k, v = self.qkv(h).view(B, S, 3, self.heads, self.head_dim).unbind(2)  # each [B, S, H, Dh]
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        o = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.out(o.transpose(1, 2).reshape(B, S, D))


class Block(nn.Module):
    """Post-norm block: h = norm(h + mix(h)); h = norm(h + mlp(h)).

    mix is attention, or (mlp_t) a SwiGLU across the sequence axis whose residual is normalized
    over the sequence axis too, as in the reference TRM-MLP.
    """

    def __init__(self, width: int, heads: int, expansion: float, seq_len: int, mlp_t: bool, eps: float,
                 multiple: int = 256):
        super().__init__()
        self.eps = eps
        self.attn = None if mlp_t else Attention(width, heads)
        self.mix = SwiGLU(seq_len, expansion, multiple) if mlp_t else None
        self.mlp = SwiGLU(width, expansion, multiple)

    def forward(self, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        if self.attn is not None:
            h = rms_norm(h + self.attn(h, rope), self.eps)
        else:
            ht = h.transpose(1, 2)  # [B, D, S]: mix tokens, normalize over tokens
            h = rms_norm(ht + self.mix(ht), self.eps).transpose(1, 2)
        return rms_norm(h + self.mlp(h), self.eps)


class Stack(nn.Module):
    """`layers` blocks applied in turn after input injection: stack(h, inj) = blocks(h + inj)."""

    def __init__(self, width: int, heads: int, expansion: float, seq_len: int, mlp_t: bool, eps: float, layers: int,
                 multiple: int = 256):
        super().__init__()
        self.layers = nn.ModuleList(Block(width, heads, expansion, seq_len, mlp_t, eps, multiple)
                                    for _ in range(layers))

    @staticmethod
    def flops(width: int, expansion: float, seq_len: int, mlp_t: bool, layers: int, multiple: int = 256) -> float:
        """Matmul FLOPs of one forward pass over one sequence of `seq_len` positions (2 per multiply-add).

        Per position and layer: attention 4D^2 (qkv, out) + 2SD (scores, weighted sum), or mlp_t
        3*D*F_S (a SwiGLU of inner width F_S across the S positions, per channel); plus the SwiGLU 3*D*F.
        """
        mix = 3 * width * ffn_width(seq_len, expansion, multiple) if mlp_t else 4 * width**2 + 2 * seq_len * width
        return 2.0 * layers * seq_len * (mix + 3 * width * ffn_width(width, expansion, multiple))

    def forward(self, h: torch.Tensor, inj, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        h = h + inj
        for layer in self.layers:
            h = layer(h, rope)
        return h


# --------------------------------------------------------------------------- causal language-model blocks


class RMSNorm(nn.Module):
    """RMSNorm with a learned per-channel weight (Llama, Huginn), normalised in float32."""

    def __init__(self, width: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return rms_norm(h, self.eps) * self.weight.to(h.dtype)


@dataclass
class KVSlot:
    """The cached keys and values of one attention layer application, for positions 0..L-1."""

    k: torch.Tensor
    """[B, H, L, Dh] keys (RoPE already applied)."""
    v: torch.Tensor
    """[B, H, L, Dh] values."""
    valid: torch.Tensor
    """[B, L] bool: the position has an entry (a token that skipped this application has none)."""

    @classmethod
    def empty(cls, batch: int, heads: int, length: int, head_dim: int, dtype, device) -> KVSlot:
        k = torch.zeros(batch, heads, length, head_dim, dtype=dtype, device=device)
        return cls(k, torch.zeros_like(k), torch.zeros(batch, length, dtype=torch.bool, device=device))

    def copy_from(self, src: KVSlot, start: int, end: int) -> None:
        """Positions start..end-1 take src's entries (a token that stopped early keeps its last ones)."""
        self.k[:, :, start:end] = src.k[:, :, start:end]
        self.v[:, :, start:end] = src.v[:, :, start:end]
        self.valid[:, start:end] = src.valid[:, start:end]


@dataclass
class KV:
    """How one attention call forms its keys. Without a slot the keys are the call's own tokens; with one,
    the call first writes its tokens' keys into the slot at positions start.. and then reads the slot."""

    start: int = 0
    """Position of the call's first token."""
    active: torch.Tensor | None = None
    """[B, S] bool: the tokens whose keys exist at this application (MoR: the selected ones); None = all."""
    slot: KVSlot | None = None
    """The cache this call writes into and reads from."""
    read_only: bool = False
    """Reuse the slot's keys and values as they are (recursive KV sharing): only queries are computed."""
    hold: KVSlot | None = None
    """With hold_mask: the slot whose entries the held tokens keep (their last iteration's, after an exit)."""
    hold_mask: torch.Tensor | None = None
    """[B, S] bool: tokens that have exited; their keys are copied from `hold` instead of recomputed."""


class LMCache:
    """Per-sequence KV caches of a language model: one KVSlot per key (layer application), made on first use.
    `length` is the number of positions already processed; `budget` the iteration slots per looped layer."""

    def __init__(self, batch: int, length: int, heads: int, head_dim: int, dtype, device, budget: int = 1):
        self.shape = (batch, heads, length, head_dim)
        self.dtype, self.device, self.budget = dtype, device, budget
        self.length = 0
        self.slots: dict[tuple, KVSlot] = {}
        self.coda_per_iteration: bool | None = None  # recurrent family: set by the first call (see looped.py)

    def slot(self, key: tuple) -> KVSlot:
        if key not in self.slots:
            self.slots[key] = KVSlot.empty(*self.shape, self.dtype, self.device)
        return self.slots[key]


def _sdpa(q, k, v, mask=None, causal=False):
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:  # see `attend`
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


class CausalAttention(nn.Module):
    """Causal multi-head self-attention with RoPE, a KV cache and key masks (see KV)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.qkv = Linear(width, 3 * width)
        self.out = Linear(width, width)

    def forward(self, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], kv: KV | None = None) -> torch.Tensor:
        """h [B, S, D]; rope = cos, sin [S, Dh] (or [B, S, Dh] for gathered tokens) at h's positions."""
        B, S, D = h.shape
        if kv is not None and kv.read_only:  # keys and values come from the slot
            q = F.linear(h, self.qkv.weight[:D].to(h.dtype)).view(B, S, self.heads, self.head_dim)
            q = apply_rope(q, *rope).transpose(1, 2)
        else:
            q, k, v = self.qkv(h).view(B, S, 3, self.heads, self.head_dim).unbind(2)  # each [B, S, H, Dh]
            q, k = apply_rope(q, *rope).transpose(1, 2), apply_rope(k, *rope).transpose(1, 2)
            v = v.transpose(1, 2)  # [B, H, S, Dh]
        if kv is None or (kv.slot is None and kv.active is None):
            o = _sdpa(q, k, v, causal=True)
        else:
            o = self._masked(q, k if not kv.read_only else None, v if not kv.read_only else None, kv)
        return self.out(o.transpose(1, 2).reshape(B, S, D))

    @staticmethod
    def _masked(q, k, v, kv: KV) -> torch.Tensor:
        B, S, start = q.shape[0], q.shape[2], kv.start
        if kv.slot is None:  # the call's own tokens, some without keys
            keys, values, valid = k, v, kv.active
            k_pos = torch.arange(start, start + S, device=q.device)
        else:
            slot, end = kv.slot, start + S
            if not kv.read_only:
                new = torch.ones(B, S, dtype=torch.bool, device=q.device) if kv.active is None else kv.active
                if kv.hold is not None:
                    held = kv.hold_mask
                    k = torch.where(held[:, None, :, None], kv.hold.k[:, :, start:end], k)
                    v = torch.where(held[:, None, :, None], kv.hold.v[:, :, start:end], v)
                    new = torch.where(held, kv.hold.valid[:, start:end], new)
                w = new[:, None, :, None]
                slot.k[:, :, start:end] = torch.where(w, k, slot.k[:, :, start:end])
                slot.v[:, :, start:end] = torch.where(w, v, slot.v[:, :, start:end])
                slot.valid[:, start:end] = slot.valid[:, start:end] | new
            keys, values, valid = slot.k[:, :, :end], slot.v[:, :, :end], slot.valid[:, :end]
            k_pos = torch.arange(end, device=q.device)
        q_pos = torch.arange(start, start + S, device=q.device)
        mask = (k_pos[None, :] <= q_pos[:, None])[None] & valid[:, None, :]  # [B, S, S_k]
        # a query without any key (a token that skips this application) attends everywhere; its output is unused
        mask = mask | ~mask.any(-1, keepdim=True)
        return _sdpa(q, keys, values, mask=mask[:, None])


class DecoderBlock(nn.Module):
    """Llama-style pre-norm block: h += attn(norm(h)); h += mlp(norm(h))."""

    def __init__(self, width: int, heads: int, expansion: float, eps: float):
        super().__init__()
        self.norm_attn, self.norm_mlp = RMSNorm(width, eps), RMSNorm(width, eps)
        self.attn = CausalAttention(width, heads)
        self.mlp = SwiGLU(width, expansion)

    def forward(self, h: torch.Tensor, rope, kv: KV | None = None) -> torch.Tensor:
        h = h + self.attn(self.norm_attn(h), rope, kv)
        return h + self.mlp(self.norm_mlp(h))


class SandwichBlock(nn.Module):
    """Huginn's sandwich block, a norm before and after both mixers: h = n2(h + attn(n1(h))); h = n4(h + mlp(n3(h)))."""

    def __init__(self, width: int, heads: int, expansion: float, eps: float):
        super().__init__()
        self.norms = nn.ModuleList(RMSNorm(width, eps) for _ in range(4))
        self.attn = CausalAttention(width, heads)
        self.mlp = SwiGLU(width, expansion)

    def forward(self, h: torch.Tensor, rope, kv: KV | None = None) -> torch.Tensor:
        n1, n2, n3, n4 = self.norms
        h = n2(h + self.attn(n1(h), rope, kv))
        return n4(h + self.mlp(n3(h)))


def block_flops(width: int, expansion: float, keys: float) -> float:
    """Matmul FLOPs per token of one causal block whose query attends to `keys` keys: 2*(4D^2 + 2*keys*D + 3*D*F)."""
    return 2.0 * (4 * width**2 + 2 * keys * width + 3 * width * ffn_width(width, expansion))
