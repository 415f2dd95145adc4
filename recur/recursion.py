"""The recursion engine, shared by every model that thinks by repeating itself.

A model plugs in with four members (see recur.models.trm.TRM):
    init_state(B) -> state                 latent tensors, e.g. TRM's (y, z)
    reset_state(state, mask) -> state      rows in mask start again
    forward(state, inputs, puzzle_ids) -> (detached new state, StepOutput)   one supervision step
    net_calls                              net applications per supervision step
and builds its step from `unroll`, which runs a list of updates with gradients only through
the last few. The engine owns everything across steps: the carry, deep supervision (N_sup
steps, one optimizer step each), the two training schedules, ACT halting with exploration,
and inference with or without halting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .config import RecursionConfig
from .losses import step_loss


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

    TENSORS = ("inputs", "labels", "puzzle_ids", "steps", "halted")

    def to_dict(self) -> dict[str, torch.Tensor]:
        out = {f"carry.{k}": getattr(self, k) for k in self.TENSORS}
        out.update({f"carry.state.{i}": s for i, s in enumerate(self.state)})
        return out

    @classmethod
    def from_dict(cls, d: dict[str, torch.Tensor]) -> "Carry":
        n = sum(k.startswith("carry.state.") for k in d)
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
        _, nxt = model(state, inputs, puzzle_ids)
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

    def empty_carry(self, model, batch: dict[str, torch.Tensor]) -> Carry:
        B = batch["inputs"].shape[0]
        return Carry(state=model.init_state(B), inputs=torch.zeros_like(batch["inputs"]),
                     labels=torch.zeros_like(batch["labels"]), puzzle_ids=torch.zeros_like(batch["puzzle_ids"]),
                     steps=torch.zeros(B, dtype=torch.int32, device=batch["inputs"].device),
                     halted=torch.ones(B, dtype=torch.bool, device=batch["inputs"].device))

    def needs_batch(self, carry: Carry) -> bool:
        """Whether the next step consumes a new batch."""
        return self.cfg.schedule == "streaming" or bool(carry.halted.all())

    def _explore(self, B: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        u = torch.rand(self.global_batch, generator=self.gen)
        m = torch.randint(2, self.cfg.n_sup + 1, (self.global_batch,), generator=self.gen, dtype=torch.int32)
        lo = self.rank * B
        return u[lo:lo + B].to(device), m[lo:lo + B].to(device)

    def step(self, model, carry: Carry, batch: dict[str, torch.Tensor] | None):
        """Refill (if `batch`), run one supervision step, decide halting.

        Returns (carry, StepLoss, metrics) where metrics are sums over rows that halted now.
        """
        cfg = self.cfg
        if batch is not None:
            fill = carry.halted
            m2 = fill.view(-1, 1)
            carry = Carry(state=model.reset_state(carry.state, fill),
                          inputs=torch.where(m2, batch["inputs"], carry.inputs),
                          labels=torch.where(m2, batch["labels"], carry.labels),
                          puzzle_ids=torch.where(fill, batch["puzzle_ids"], carry.puzzle_ids),
                          steps=torch.where(fill, 0, carry.steps),
                          halted=torch.zeros_like(carry.halted))
        active = ~carry.halted
        state, out = model(carry.state, carry.inputs, carry.puzzle_ids)
        steps = carry.steps + active.to(torch.int32)
        target = (continue_target(model, state, carry.inputs, carry.puzzle_ids, steps, cfg.n_sup)
                  if cfg.act == "q_learning" and model.training else None)
        loss = step_loss(out.logits, out.q_halt, out.q_continue, carry.labels, active, cfg.loss, cfg.act,
                         cfg.halt_weight, target)
        with torch.no_grad():
            u, m = self._explore(active.shape[0], active.device) if model.training else (None, None)
            score = halt_score(out, cfg.act)
            done = active & halt_decision(steps, score, cfg.n_sup, u, m, cfg.exploration)
            if cfg.schedule == "per_batch":  # finished rows keep their answer
                state = tuple(torch.where(active.view((-1,) + (1,) * (s.dim() - 1)), s, old)
                              for s, old in zip(state, carry.state))
            has_labels = (carry.labels != 0).any(-1)
            counted = done & has_labels
            w = counted.to(torch.float32)
            metrics = {
                "count": w.sum(),
                "accuracy": (loss.token_acc * w).sum(),
                "exact_accuracy": (loss.exact.float() * w).sum(),
                "halt_accuracy": (((score > 0) == loss.exact).float() * w).sum(),
                "steps": (steps.float() * w).sum(),
                "lm_loss": loss.lm,
                "halt_loss": loss.halt,
                "continue_loss": loss.cont,
            }
        carry = Carry(state=state, inputs=carry.inputs, labels=carry.labels, puzzle_ids=carry.puzzle_ids,
                      steps=steps, halted=carry.halted | done)
        return carry, loss, metrics


@dataclass
class Inference:
    """Result of running a batch through N_sup supervision steps."""

    tokens: torch.Tensor
    """[B, L] the answer read at each row's last step."""
    logits: torch.Tensor
    """[B, L, V] the logits of that step."""
    steps: torch.Tensor
    """[B] supervision steps used per row."""
    per_step: torch.Tensor
    """[S, B, L] the answer after every supervision step (frozen once a row halted)."""
    halt_score: torch.Tensor
    """[S, B] the halting score after every step (> 0: halt; frozen once a row halted)."""


@torch.no_grad()
def infer(model, inputs: torch.Tensor, puzzle_ids: torch.Tensor, n_sup: int, halt: str = "none",
          act: str = "halt") -> Inference:
    """Run N_sup supervision steps. halt="none": every row runs all steps (the reference protocol);
    "adaptive": a row stops at the first step whose halting score (see halt_score) is > 0, and later
    steps skip it entirely."""
    B = inputs.shape[0]
    state = model.init_state(B)
    rows = torch.arange(B, device=inputs.device)  # rows still running
    steps = torch.zeros(B, dtype=torch.int32, device=inputs.device)
    tokens, score = torch.zeros_like(inputs), torch.zeros(B, device=inputs.device)
    logits = None
    per_step, score_per_step = [], []
    for s in range(1, n_sup + 1):
        if rows.numel() == B:  # nobody halted yet: no gather/scatter
            state, out = model(state, inputs, puzzle_ids)
            logits = out.logits
        else:
            sub_state, out = model(tuple(t[rows] for t in state), inputs[rows], puzzle_ids[rows])
            state = tuple(full.index_copy(0, rows, part) for full, part in zip(state, sub_state))
            logits = logits.index_copy(0, rows, out.logits)
        tokens = tokens.index_copy(0, rows, out.logits.argmax(-1).to(tokens.dtype))
        row_score = halt_score(out, act)
        score = score.index_copy(0, rows, row_score)
        steps[rows] = s
        per_step.append(tokens)
        score_per_step.append(score)
        if halt == "adaptive":
            rows = rows[row_score <= 0]
            if rows.numel() == 0:  # everyone halted: the remaining steps repeat the final answers
                per_step += [tokens] * (n_sup - s)
                score_per_step += [score] * (n_sup - s)
                break
    return Inference(tokens=tokens, logits=logits, steps=steps, per_step=torch.stack(per_step),
                     halt_score=torch.stack(score_per_step))
