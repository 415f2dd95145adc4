"""The language-model engine: next-token training of recur.models.lm, and its evaluation.

Per optimizer step: one batch of windows [B, S] (inputs, and labels shifted by one; label 0 = PAD is not
supervised). The recurrent family runs r core iterations, r ~ Poisson(LogNormal(ln r̄ − σ²/2, σ)) + 1 drawn per
step for the whole batch (Huginn), and backpropagates the last k = model.lm.backprop_depth; its random initial
state s_0 is drawn for the *global* batch and sliced by rank, so R processes of B/R rows train exactly as one
process of B rows. Loss = the mean next-token cross-entropy of each sequence's supervised tokens, summed over
sequences and divided by the global batch (as the puzzle loss), plus the model's named auxiliary losses (router
BCE, balancing, the hybrid's exit BCE).

`evaluate_lm` scores a split at a chosen depth and exit rule: validation NLL per token and perplexity, token
accuracy, exact match of every supervised token per sequence (with answer-only labels: greedy decoding gets the
whole answer right), the task's own metrics, and the mean depth per token.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .config import RunConfig
from .data import Split, eval_batches
from .dist import Dist
from .engine import StepResult
from .models.looped import sample_depth, truncated_normal


def sequence_ce(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-token CE [B, S] (0 where label = 0), supervised tokens per row [B], argmax right [B, S])."""
    valid = labels != 0
    ce = F.cross_entropy(logits.float().flatten(0, 1), labels.long().flatten(), reduction="none").view(labels.shape)
    return torch.where(valid, ce, 0.0), valid.sum(-1), (logits.argmax(-1) == labels) & valid


class LMEngine:
    """recur.engine.Engine for model.arch = lm."""

    progress = {"loss": "loss", "nll": "nll", "accuracy": "acc"}

    def __init__(self, cfg: RunConfig, dist: Dist | None = None, device: torch.device = torch.device("cpu"),
                 info: dict | None = None, task=None, dtype: torch.dtype = torch.float32):
        self.cfg, self.lm = cfg, cfg.model.lm
        self.dist, self.device, self.info, self.task, self.dtype = dist or Dist(), device, info, task, dtype
        self.global_batch = cfg.train.batch_size
        self.recurrent = self.lm.family == "recurrent"
        self.gen = torch.Generator().manual_seed(cfg.seed)  # depths and initial states, the same on every rank

    def _depth_and_state(self, B: int, S: int) -> tuple[int, torch.Tensor]:
        r = sample_depth(self.lm.mean_depth, self.lm.depth_sigma, self.gen)
        s0 = truncated_normal((self.global_batch, S, self.cfg.model.hidden), self.gen)
        rows = slice(self.dist.rank * B, (self.dist.rank + 1) * B)
        return r, s0[rows].to(self.device, self.dtype)

    def step(self, model, next_batch: Callable[[], dict[str, torch.Tensor]], step: int, total: int) -> StepResult:
        batch = next_batch()
        x, y = batch["inputs"], batch["labels"]
        B, S = x.shape
        if self.recurrent:
            r, s0 = self._depth_and_state(B, S)
            out = model(x, depth=r, n_grad=self.lm.backprop_depth, init_state=s0)
        else:
            r = None
            out = model(x)
        ce, count, right = sequence_ce(out.logits, y)
        per_seq = ce.sum(-1) / count.clamp_min(1)  # [B]
        aux = sum(out.losses.values(), torch.zeros((), device=x.device))
        # the auxiliary losses are means over this rank's rows: scaled so that gradients summed over ranks average
        loss = per_seq.sum() / self.global_batch + aux * (B / self.global_batch)
        with torch.no_grad():
            tokens = count.sum().float()
            flops = model.flops_per_token(depth=r, training=True, n_grad=self.lm.backprop_depth) * tokens
            sums = {"loss": loss.detach(), "nll": per_seq.sum() / self.global_batch, "tokens": tokens,
                    "right": right.sum().float(), "exact": (right.sum(-1) == count).sum().float(),
                    "sequences": torch.tensor(float(B), device=x.device),
                    **{f"aux.{k}": v.detach() * (B / self.global_batch) for k, v in out.losses.items()},
                    **{f"stat.{k}": v.float() * (B / self.global_batch) for k, v in out.stats.items()}}
            if r is not None:
                sums["sampled_depth"] = torch.tensor(float(r) * B / self.global_batch, device=x.device)
        return StepResult(loss=loss, sums=sums, totals={"tokens": tokens, "flops": flops, "sequences": sums["sequences"]})

    def record(self, window: dict[str, float], steps: int) -> dict:
        nll = window["nll"] / steps
        rec = {"loss": window["loss"] / steps, "nll": nll, "ppl": math.exp(min(nll, 50.0)),
               "accuracy": window["right"] / max(window["tokens"], 1.0),
               "exact_accuracy": window["exact"] / max(window["sequences"], 1.0), "tokens": int(window["tokens"])}
        rec.update({k: v / steps for k, v in window.items() if k.startswith(("aux.", "stat."))})
        if "sampled_depth" in window:
            rec["sampled_depth"] = window["sampled_depth"] / steps
        return rec

    def summary(self, totals: dict[str, float], model) -> dict:
        return {"unique_params": model.param_count(), "train_tokens": int(totals["tokens"]),
                "train_flops": totals["flops"], "train_flops_per_token": totals["flops"] / max(totals["tokens"], 1.0)}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"rng.lm": self.gen.get_state()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        self.gen.set_state(tensors["rng.lm"])

    def evaluate(self, model, split: Split, limit: int | None = None) -> dict:
        c = self.cfg
        return evaluate_lm(model, split, c.eval.batch_size or c.train.batch_size, self.device, self.dist,
                           c.eval.max_examples if limit is None else limit, self.task, self.info)

    def eval_line(self, res: dict) -> str:
        line = f"val nll {res['nll']:.4f} (ppl {res['ppl']:.2f}), token acc {res['token_accuracy']:.3f}"
        return line + f", exact {res['exact_accuracy']:.3f}, depth {res['mean_depth']:.2f}"


@torch.no_grad()
def evaluate_lm(model, split: Split, batch_size: int, device: torch.device, dist: Dist | None = None, limit: int = 0,
                task=None, info: dict | None = None, depth: int | None = None, exit: str | None = None,
                threshold: float | None = None) -> dict:
    """Metrics over the split's windows (summed over ranks): NLL per supervised token and its perplexity, token
    accuracy, exact match per sequence, the task's metrics (`task.score`), the mean depth per token, and the
    matmul FLOPs per token the depths used. Recurrent family: `depth` r (default model.lm.mean_depth) and
    `exit`/`threshold` (default model.lm.exit)."""
    dist = dist or Dist()
    was_training = model.training
    model.eval()
    kw = dict(depth=depth, exit=exit, threshold=threshold) if model.looped is not None else {}
    sums: dict[str, float] = {}

    def add(name: str, value: float, n: float = 1.0) -> None:
        sums[name] = sums.get(name, 0.0) + value
        sums["n:" + name] = sums.get("n:" + name, 0.0) + n

    for b in eval_batches(split, batch_size, dist.rank, dist.world, limit):
        x = torch.from_numpy(b["inputs"]).to(device)
        y = torch.from_numpy(b["labels"]).to(device)
        out = model(x, **kw)
        ce, count, right = sequence_ce(out.logits, y)
        valid = y != 0
        add("nll", ce.sum().item(), count.sum().item())
        add("token_accuracy", right.sum().item(), count.sum().item())
        add("exact_accuracy", (right.sum(-1) == count).sum().item(), len(x))
        add("mean_depth", out.depth[valid].float().sum().item(), count.sum().item())
        if task is not None:
            for name, v in task.score(b["inputs"], b["labels"], out.logits.argmax(-1).cpu().numpy(), info).items():
                v = np.asarray(v, dtype=np.float64)
                ok = ~np.isnan(v)
                add(f"task.{name}", float(v[ok].sum()), float(ok.sum()))
    sums = dist.sum_dict(sums)
    model.train(was_training)
    mean = {k: sums[k] / sums["n:" + k] for k in sums if not k.startswith("n:") and sums["n:" + k]}
    nll = mean.get("nll", float("nan"))
    mean_depth = mean.get("mean_depth", 0.0)
    # the recurrent family at its mean depth (criteria that read the output also run the coda every iteration)
    r = mean_depth if model.looped is not None else None
    return {"examples": int(sums.get("n:exact_accuracy", 0)), "tokens": int(sums.get("n:nll", 0)), "nll": nll,
            "ppl": math.exp(min(nll, 50.0)) if nll == nll else float("nan"),
            "token_accuracy": mean.get("token_accuracy", 0.0), "exact_accuracy": mean.get("exact_accuracy", 0.0),
            "mean_depth": mean_depth, "flops_per_token": model.flops_per_token(depth=r),
            "task": {k[len("task."):]: v for k, v in mean.items() if k.startswith("task.")}}
