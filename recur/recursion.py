"""The recursion engine, shared by every model that thinks by repeating itself.

A model plugs in with these members (see recur.models.trm.TRM):
    init_state(B) -> state                 latent tensors, e.g. TRM's (y, z); state[0] is the answer
    reset_state(state, mask) -> state      rows in mask start again
    forward(state, tokens, puzzle_ids, step) -> (detached new state, StepOutput)   one supervision step
    net_calls, grad_calls, step_flops()    its cost per supervision step
and builds its step from `unroll`, which runs a list of updates with gradients only through
the last few. The engine owns everything across steps: the carry, deep supervision (N_sup
steps, one optimizer step each) with per-step targets (recur.targets), the two training
schedules, ACT halting with exploration, and the cost accounting. Inference is recur.inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .config import RecursionConfig
from .errors import RecurError
from .losses import IGNORE, step_loss
from .targets import step_target, step_weight


def unroll(updates: Sequence[Callable], state, n_grad: int):
    """Apply `updates` in order; all but the last `n_grad` run without gradients.

    TRM: updates = ([z-update]*n + [y-update])*T with n_grad = n+1 (backprop through the last cycle).
    """
    split = len(updates) - n_grad
    with torch.no_grad():
        for f in updates[:split]:
            state = f(state)
    for f in updates[split:]:
        state = f(state)
    return state


@dataclass
class StepOutput:
    """What one supervision step produces."""

    logits: torch.Tensor
    """[B, L, V] answer logits."""
    q_halt: torch.Tensor
    """[B] float32 halting logit (halt when > 0)."""
    q_continue: torch.Tensor
    """[B] float32 continue logit (used by Q-learning ACT variants)."""


@dataclass
class Carry:
    """Per-row state that persists across optimizer steps."""

    state: tuple
    """Model latents, e.g. TRM (y, z), each [B, P+L, D]."""
    inputs: torch.Tensor
    """[B, L] tokens of the example in each row."""
    labels: torch.Tensor
    """[B, L] its target tokens."""
    puzzle_ids: torch.Tensor
    """[B] its puzzle-embedding rows."""
    steps: torch.Tensor
    """[B] int32 supervision steps the example has had."""
    halted: torch.Tensor
    """[B] bool: the example is done; the row takes new data."""
    tokens: torch.Tensor
    """[B, L] what the net reads as x next step: the inputs, or its last answer (recursion.feedback=prediction)."""
    priority: torch.Tensor
    """[B, L] float32 in [0, 1): the order in which per-step targets fill cells (recur.targets), drawn on entry."""
    calls: torch.Tensor
    """[B] float32 net applications spent on the example so far."""
    flops: torch.Tensor
    """[B] float32 matmul FLOPs spent on the example so far (forward and backward)."""

    TENSORS = ("inputs", "labels", "puzzle_ids", "steps", "halted", "tokens", "priority", "calls", "flops")

    def to_dict(self) -> dict[str, torch.Tensor]:
        out = {f"carry.{k}": getattr(self, k) for k in self.TENSORS}
        out.update({f"carry.state.{i}": s for i, s in enumerate(self.state)})
        return out

    @classmethod
    def from_dict(cls, d: dict[str, torch.Tensor]) -> Carry:
        n = sum(k.startswith("carry.state.") for k in d)
        missing = [k for k in cls.TENSORS if f"carry.{k}" not in d]
        if missing:
            raise RecurError(f"the checkpoint's carry lacks {', '.join(missing)} (written by an older recur); "
                             f"it can be evaluated but not resumed")
        return cls(state=tuple(d[f"carry.state.{i}"] for i in range(n)), **{k: d[f"carry.{k}"] for k in cls.TENSORS})


def halt_score(out: StepOutput, act: str) -> torch.Tensor:
    """[B] a row wants to halt when this is > 0: q_halt (TRM), q_halt - q_continue (Q-learning), never (off)."""
    if act == "q_learning":
        return out.q_halt - out.q_continue
    if act == "off":
        return torch.full_like(out.q_halt, -torch.inf)
    return out.q_halt


def halt_decision(steps, score, n_sup: int, explore_u=None, explore_min=None, exploration=0.0):
    """[B] bool: halt after this step. Always at N_sup; before that when score > 0 (see halt_score),
    unless exploration drew a minimum step count (probability `exploration`, uniform in {2..N_sup})
    not yet reached."""
    halted = (steps >= n_sup) | (score > 0)
    if explore_u is not None:  # explore_min <= N_sup, so rows at N_sup always halt
        halted = halted & (steps >= torch.where(explore_u < exploration, explore_min, 0))
    return halted


def continue_target(model, state, inputs, puzzle_ids, steps, n_sup: int) -> torch.Tensor:
    """HRM's bootstrapped Q-continue target from one extra no-grad forward on the new state:
    sigmoid(q_halt') at the last step, else sigmoid(max(q_halt', q_continue'))."""
    with torch.no_grad():
        _, nxt = model(state, inputs, puzzle_ids, steps + 1)
        return torch.sigmoid(torch.where(steps >= n_sup, nxt.q_halt, torch.maximum(nxt.q_halt, nxt.q_continue)))


class DeepSupervision:
    """Training-time deep supervision: one supervision step (and one optimizer step) per call.

    `streaming` (the reference code): rows that halted take the matching rows of a fresh batch
    every step, so examples stay 1..N_sup steps. `per_batch` (the paper's pseudo-code): a batch
    runs until every row has halted or reached N_sup; halted rows keep their state and drop out
    of the loss; then the next batch comes.

    Exploration draws are made for the *global* batch from one seeded generator and sliced by
    rank, so R processes of B/R rows take the same decisions as one process of B rows.
    """

    def __init__(self, cfg: RecursionConfig, global_batch: int, rank: int, seed: int):
        self.cfg, self.global_batch = cfg, global_batch
        self.gen = torch.Generator().manual_seed(seed)
        self.rank = rank
        self.loss_fn = step_loss  # replaceable: bench/step_time.py times a compiled copy

    def empty_carry(self, model, batch: dict[str, torch.Tensor]) -> Carry:
        x = batch["inputs"]
        B, dev = x.shape[0], x.device
        return Carry(state=model.init_state(B), inputs=torch.zeros_like(x), labels=torch.zeros_like(batch["labels"]),
                     puzzle_ids=torch.zeros_like(batch["puzzle_ids"]), steps=torch.zeros(B, dtype=torch.int32, device=dev),
                     halted=torch.ones(B, dtype=torch.bool, device=dev), tokens=torch.zeros_like(x),
                     priority=torch.zeros(x.shape, device=dev), calls=torch.zeros(B, device=dev),
                     flops=torch.zeros(B, device=dev))

    def needs_batch(self, carry: Carry) -> bool:
        """Whether the next step consumes a new batch."""
        return self.cfg.schedule == "streaming" or bool(carry.halted.all())

    def _explore(self, B: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        u = torch.rand(self.global_batch, generator=self.gen)
        m = torch.randint(2, self.cfg.n_sup + 1, (self.global_batch,), generator=self.gen, dtype=torch.int32)
        lo = self.rank * B
        return u[lo:lo + B].to(device), m[lo:lo + B].to(device)

    def _priority(self, B: int, L: int, device) -> torch.Tensor:
        """Per-cell target order for the rows of this rank, drawn for the global batch like _explore."""
        u = torch.rand(self.global_batch, L, generator=self.gen)
        return u[self.rank * B:(self.rank + 1) * B].to(device)

    def step(self, model, carry: Carry, batch: dict[str, torch.Tensor] | None):
        """Refill (if `batch`), run one supervision step, decide halting.

        Returns (carry, StepLoss, metrics) where metrics are sums over rows that halted now.
        """
        cfg = self.cfg
        if batch is not None:
            fill = carry.halted
            m2 = fill.view(-1, 1)
            priority = carry.priority
            if cfg.targets != "label":  # a fresh path for every example that enters
                priority = torch.where(m2, self._priority(*carry.inputs.shape, fill.device), priority)
            carry = Carry(state=model.reset_state(carry.state, fill),
                          inputs=torch.where(m2, batch["inputs"], carry.inputs),
                          labels=torch.where(m2, batch["labels"], carry.labels),
                          puzzle_ids=torch.where(fill, batch["puzzle_ids"], carry.puzzle_ids),
                          steps=torch.where(fill, 0, carry.steps),
                          halted=torch.zeros_like(carry.halted),
                          tokens=torch.where(m2, batch["inputs"], carry.tokens), priority=priority,
                          calls=torch.where(fill, 0.0, carry.calls), flops=torch.where(fill, 0.0, carry.flops))
        active = ~carry.halted
        state, out = model(carry.state, carry.tokens, carry.puzzle_ids, carry.steps + 1)
        steps = carry.steps + active.to(torch.int32)
        q_target = cfg.act == "q_learning" and model.training
        target = (continue_target(model, state, carry.tokens, carry.puzzle_ids, steps, cfg.n_sup)
                  if q_target else None)
        labels = step_target(cfg.targets, carry.inputs, carry.labels, carry.priority, steps, cfg.n_sup)
        weight = active.to(torch.float32)
        if cfg.step_weights != "uniform":
            weight = weight * step_weight(cfg.step_weights, steps, cfg.n_sup, cfg.step_decay)
        loss = self.loss_fn(out.logits, out.q_halt, out.q_continue, labels, weight, cfg.loss, cfg.act,
                            cfg.halt_weight, target, cfg.loss_precision)
        with torch.no_grad():
            u, m = self._explore(active.shape[0], active.device) if model.training else (None, None)
            score = halt_score(out, cfg.act)
            done = active & halt_decision(steps, score, cfg.n_sup, u, m, cfg.exploration)
            if cfg.schedule == "per_batch":  # finished rows keep their answer
                state = tuple(torch.where(active.view((-1,) + (1,) * (s.dim() - 1)), s, old)
                              for s, old in zip(state, carry.state))
            tokens = carry.tokens
            if cfg.feedback == "prediction":  # the next step reads this answer (PAD stays PAD)
                answer = torch.where(carry.inputs == IGNORE, IGNORE, out.logits.argmax(-1).to(tokens.dtype))
                tokens = torch.where(active.view(-1, 1), answer, tokens)
            # the Q-learning target costs one more forward (no backward)
            calls = model.net_calls * (2 if q_target else 1)
            flops = model.step_flops(model.training) + (model.step_flops(False) if q_target else 0.0)
            spent_calls = carry.calls + active * calls
            spent_flops = carry.flops + active * flops
            has_labels = (carry.labels != 0).any(-1)
            counted = done & has_labels
            w = counted.to(torch.float32)
            metrics = {
                "count": w.sum(),
                "accuracy": (loss.token_acc * w).sum(),
                "exact_accuracy": (loss.exact.float() * w).sum(),
                "halt_accuracy": (((score > 0) == loss.exact).float() * w).sum(),
                "steps": (steps.float() * w).sum(),
                "calls": (spent_calls * w).sum(),
                "flops": (spent_flops * w).sum(),
                "lm_loss": loss.lm,
                "halt_loss": loss.halt,
                "continue_loss": loss.cont,
            }
        carry = Carry(state=state, inputs=carry.inputs, labels=carry.labels, puzzle_ids=carry.puzzle_ids,
                      steps=steps, halted=carry.halted | done, tokens=tokens, priority=carry.priority,
                      calls=spent_calls, flops=spent_flops)
        return carry, loss, metrics
