"""The contract between the trainer and what it trains.

The trainer (recur.train) owns everything that does not depend on the model family: data order,
optimizers, learning rate, EMA, gradient sync, checkpoints and exact resume, logging, progress,
plots and the evaluation cadence. An engine owns one training step of its family: it pulls a batch
when it needs one, chooses the depth of the step (a depth curriculum, a sampled recurrence), runs the
model, and returns the loss with *named* metrics; it also says what a checkpoint must hold to resume
it, how its evaluation runs, and how its records read.

Engines: recur.supervision.DeepSupervision (puzzles: the carry, halting, per-step targets) and
recur.lm_engine.LMEngine (next-token training, sampled recurrence depth). `build_engine` picks the one for a
config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch


@dataclass
class StepResult:
    """One optimizer step's work, as the engine reports it."""

    loss: torch.Tensor
    """Scalar to backpropagate, already divided by the *global* batch (so summed gradients over ranks equal one
    process's)."""
    sums: dict[str, torch.Tensor]
    """Named 0-dim sums that the trainer adds up over a log window (and over ranks) and hands to `Engine.record`."""
    totals: dict[str, torch.Tensor]
    """Named 0-dim sums kept over the whole run (and over ranks) and handed to `Engine.summary`."""


class Engine(Protocol):
    progress: dict[str, str]
    """Record fields the progress bar shows, with their short labels."""

    def step(self, model: torch.nn.Module, next_batch: Callable[[], dict[str, torch.Tensor]], step: int,
             total: int) -> StepResult:
        """Optimizer step `step` (0-based) of `total`: forward and loss (the trainer does backward and the update)."""

    def record(self, window: dict[str, float], steps: int) -> dict:
        """A metrics.jsonl training record from a log window's summed `sums` (over `steps` optimizer steps)."""

    def summary(self, totals: dict[str, float], model: torch.nn.Module) -> dict:
        """Run-long figures for summary.json from the summed `totals` (and the model's own cost figures)."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint must hold to continue exactly (called on every rank; gathered where it is per-row)."""

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Continue from `state_dict()`'s tensors (possibly written by another number of ranks)."""

    def evaluate(self, model: torch.nn.Module, split, limit: int | None = None) -> dict:
        """Held-out metrics (summed over ranks), for metrics.jsonl and summary.json."""

    def eval_line(self, res: dict) -> str:
        """One line on the console about an evaluation."""


def build_engine(cfg, info: dict, task, dist, device: torch.device, dtype: torch.dtype) -> Engine:
    """The engine of cfg.model.arch's family, for a dataset described by `info` (recur.data) on `device`, the
    model computing in `dtype`."""
    from .lm_engine import LMEngine
    from .supervision import DeepSupervision

    engine = LMEngine if cfg.model.arch == "lm" else DeepSupervision
    return engine(cfg, dist, device, info, task, dtype)
