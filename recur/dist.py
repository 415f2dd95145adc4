"""Device choice and data parallelism over torch.distributed (launched by torchrun).

Data parallelism is plain gradient summation: each rank takes its slice of the global batch,
its loss is already divided by the *global* batch size, so summing gradients over ranks gives
exactly the single-process gradient. Sparse puzzle-embedding gradients are all-gathered.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from .errors import RecurError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RecurError("train.device=cuda but no CUDA device is available (use train.device=auto or cpu)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise RecurError("train.device=mps but MPS is not available (use train.device=auto or cpu)")
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def busy_cores(samples: int = 5, gap_s: float = 0.02) -> int:
    """How many cores other processes keep busy now: the median count of runnable threads in /proc/loadavg over
    a few samples, less this process's one; 0 where /proc is not there."""
    import statistics
    import time

    counts = []
    for _ in range(samples):
        try:
            counts.append(int(open("/proc/loadavg").read().split()[3].split("/")[0]))
        except (OSError, IndexError, ValueError):
            return 0
        time.sleep(gap_s)
    return max(0, round(statistics.median(counts)) - 1)


def auto_threads() -> int:
    """CPU threads for train.threads=0: torch's default (one per core), less the cores already busy."""
    return max(1, torch.get_num_threads() - busy_cores())


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (AVX512-BF16 or AMX). Elsewhere oneDNN emulates
    bfloat16, slower than float32. (torch only exposes these checks privately; a torch without them counts as no.)"""
    return any(getattr(torch.cpu, f"_is_{isa}_supported", lambda: False)() for isa in ("avx512_bf16", "amx_tile"))


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype for train.precision; auto = bfloat16 on CUDA and on CPUs with native bfloat16."""
    if name == "auto":
        native = device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())
        return torch.bfloat16 if native else torch.float32
    return getattr(torch, name)


@dataclass
class Dist:
    """This process's place in the data-parallel group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls, device: torch.device) -> "Dist":
        """Join the process group torchrun describes in the environment, if any."""
        world = int(os.environ.get("WORLD_SIZE", 1))
        if world == 1:
            return cls()
        if not tdist.is_initialized():
            tdist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return cls(rank=tdist.get_rank(), world=tdist.get_world_size())

    @property
    def main(self) -> bool:
        return self.rank == 0

    def close(self, wait: bool = True) -> None:
        """Leave the process group (exiting without this can abort the process). `wait` for the other
        ranks first on a normal exit; not after an error, when they may never arrive."""
        if self.world > 1 and tdist.is_initialized():
            if wait:
                tdist.barrier()
            tdist.destroy_process_group()

    def barrier(self) -> None:
        if self.world > 1:
            tdist.barrier()

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            tdist.all_reduce(t)
        return t

    def sum_dict(self, d: dict[str, float]) -> dict[str, float]:
        """Sum {name: number} over ranks; a name missing on a rank counts as 0 there."""
        if self.world == 1:
            return d
        parts: list = [None] * self.world
        tdist.all_gather_object(parts, d)
        out: dict[str, float] = {}
        for part in parts:
            for k, v in part.items():
                out[k] = out.get(k, 0.0) + v
        return out

    def merged(self, acc):
        """An accumulator (anything with merge(other)) combined over ranks: every rank gets the sum."""
        if self.world == 1:
            return acc
        parts: list = [None] * self.world
        tdist.all_gather_object(parts, acc)
        for r, part in enumerate(parts):
            if r != self.rank:
                acc.merge(part)
        return acc

    def broadcast_params(self, model: torch.nn.Module) -> None:
        if self.world > 1:
            for t in model.state_dict().values():
                tdist.broadcast(t, 0)

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate each rank's rows in rank order (all ranks get the result)."""
        if self.world == 1:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world)]
        tdist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def sync_grads(self, model: torch.nn.Module) -> None:
        """Sum gradients over ranks: one flat all-reduce for dense ones, an all-gather for sparse ones."""
        if self.world == 1:
            return
        dense = [p for p in model.parameters() if p.grad is not None and not p.grad.is_sparse]
        if dense:
            flat = torch.cat([p.grad.reshape(-1) for p in dense])
            tdist.all_reduce(flat)
            for p, g in zip(dense, flat.split([p.numel() for p in dense])):
                p.grad.copy_(g.view_as(p.grad))
        for p in model.parameters():
            if p.grad is not None and p.grad.is_sparse:
                g = p.grad.coalesce()
                idx = self._gather_var(g.indices()[0])
                val = self._gather_var(g.values())
                p.grad = torch.sparse_coo_tensor(idx.unsqueeze(0), val, p.shape)

    def _gather_var(self, t: torch.Tensor) -> torch.Tensor:
        """all_gather of tensors whose first dimension differs between ranks."""
        n = torch.tensor([t.shape[0]], device=t.device)
        sizes = [torch.zeros_like(n) for _ in range(self.world)]
        tdist.all_gather(sizes, n)
        top = int(max(s.item() for s in sizes))
        pad = torch.zeros((top - t.shape[0],) + t.shape[1:], dtype=t.dtype, device=t.device)
        parts = [torch.empty((top,) + t.shape[1:], dtype=t.dtype, device=t.device) for _ in range(self.world)]
        tdist.all_gather(parts, torch.cat([t, pad]))
        return torch.cat([part[:int(s.item())] for part, s in zip(parts, sizes)])
