"""Puzzle deep supervision: the carry, halting, and the engine that trains recursive puzzle models.

A `Carry` holds, per batch row, one puzzle's state across supervision steps. `Carry.step` runs one
supervision step of a recursive model (recur.recursion.RecursiveModel) on every row: the only place
that calls the model for a step, shared by training (`DeepSupervision`), inference (recur.inference:
every row, adaptive halting, continuous batching) and the profiler. `Carry.refill` puts new puzzles
into the rows that finished: the reference's streaming schedule in training, continuous batching in
inference.

`DeepSupervision` is the trainer's engine for puzzles (recur.engine.Engine): N_sup supervision steps
per example, one optimizer step each, with per-step targets (recur.targets), the two training
schedules, ACT halting with exploration, the depth curriculum, and the cost accounting.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from .config import RunConfig, curriculum_stages
from .dist import Dist
from .engine import StepResult
from .errors import RecurError
from .losses import IGNORE, StepLoss, step_loss
from .recursion import Depth, StepOutput
from .targets import step_target, step_weight


@dataclass
class Carry:
    """Per-row state that persists across supervision steps."""

    state: tuple
    """Model latents, e.g. TRM (y, z), each [B, P+L, D]."""
    inputs: torch.Tensor
    """[B, L] tokens of the puzzle in each row."""
    labels: torch.Tensor
    """[B, L] its target tokens (zeros in inference)."""
    puzzle_ids: torch.Tensor
    """[B] its puzzle-embedding rows."""
    steps: torch.Tensor
    """[B] int32 supervision steps the puzzle has had."""
    halted: torch.Tensor
    """[B] bool: the puzzle is done; the row takes new data."""
    tokens: torch.Tensor
    """[B, L] what the net reads as x next step: the inputs, or its last answer (recursion.feedback=prediction)."""
    priority: torch.Tensor
    """[B, L] float32 in [0, 1): the order in which per-step targets fill cells (recur.targets), drawn on entry."""
    calls: torch.Tensor
    """[B] float32 net applications spent on the puzzle so far."""
    flops: torch.Tensor
    """[B] float32 matmul FLOPs spent on the puzzle so far (forward and backward)."""

    TENSORS = ("inputs", "labels", "puzzle_ids", "steps", "halted", "tokens", "priority", "calls", "flops")

    @classmethod
    def empty(cls, model, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> Carry:
        """B rows shaped like `inputs` [B, L], all halted (so the first refill fills every one)."""
        B, dev = inputs.shape[0], inputs.device
        zeros = torch.zeros(B, device=dev)
        return cls(state=model.init_state(B), inputs=torch.zeros_like(inputs),
                   labels=torch.zeros_like(inputs if labels is None else labels),
                   puzzle_ids=torch.zeros(B, dtype=torch.int32, device=dev), steps=zeros.int(),
                   halted=torch.ones(B, dtype=torch.bool, device=dev), tokens=torch.zeros_like(inputs),
                   priority=torch.zeros(inputs.shape, device=dev), calls=zeros, flops=zeros)

    def refill(self, model, fill: torch.Tensor, new: dict[str, torch.Tensor],
               priority: torch.Tensor | None = None) -> Carry:
        """Rows where fill [B] is set start the puzzles of `new` (its same rows: inputs, puzzle_ids, and labels
        when given) from the model's initial state."""
        m2 = fill.view(-1, 1)
        labels = self.labels if "labels" not in new else torch.where(m2, new["labels"], self.labels)
        return Carry(state=model.reset_state(self.state, fill), inputs=torch.where(m2, new["inputs"], self.inputs),
                     labels=labels, puzzle_ids=torch.where(fill, new["puzzle_ids"], self.puzzle_ids),
                     steps=torch.where(fill, 0, self.steps), halted=self.halted & ~fill,
                     tokens=torch.where(m2, new["inputs"], self.tokens),
                     priority=self.priority if priority is None else torch.where(m2, priority, self.priority),
                     calls=torch.where(fill, 0.0, self.calls), flops=torch.where(fill, 0.0, self.flops))

    def select(self, rows: torch.Tensor) -> Carry:
        """The carry of the rows `rows` (indices or a bool mask)."""
        return Carry(state=tuple(s[rows] for s in self.state), **{k: getattr(self, k)[rows] for k in self.TENSORS})

    def step(self, model, act: str, depth: Depth | None = None, trace: list | None = None,
             active: torch.Tensor | None = None) -> tuple[Carry, StepOutput, torch.Tensor]:
        """One supervision step of every row: (the carry after it, the step's output, the halting score [B]).

        Rows outside `active` [B] (default: all) keep their state and step count: a finished row of the per_batch
        schedule holds its answer."""
        state, out = model(self.state, self.tokens, self.puzzle_ids, self.steps + 1, trace=trace, depth=depth)
        steps = self.steps + 1
        if active is not None:
            steps = torch.where(active, steps, self.steps)
            state = tuple(torch.where(active.view((-1,) + (1,) * (s.dim() - 1)), s, old)
                          for s, old in zip(state, self.state))
        return replace(self, state=state, steps=steps), out, halt_score(out, act)

    def feed(self, answer: torch.Tensor, rows: torch.Tensor | None = None) -> Carry:
        """The net reads `answer` [B, L] as x next step (feedback=prediction), in `rows` [B] (default all); PAD
        positions of the puzzle stay PAD."""
        tokens = fed_back(self.inputs, answer)
        return replace(self, tokens=tokens if rows is None else torch.where(rows.view(-1, 1), tokens, self.tokens))

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


def fed_back(inputs: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    """What the net reads next with feedback="prediction": the answer, PAD where the puzzle has PAD."""
    return torch.where(inputs == IGNORE, IGNORE, answer.to(inputs.dtype))


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


def continue_target(model, state, inputs, puzzle_ids, steps, n_sup: int, depth: Depth | None = None) -> torch.Tensor:
    """HRM's bootstrapped Q-continue target from one extra no-grad forward on the new state:
    sigmoid(q_halt') at the last step, else sigmoid(max(q_halt', q_continue'))."""
    with torch.no_grad():
        _, nxt = model(state, inputs, puzzle_ids, steps + 1, depth=depth)
        return torch.sigmoid(torch.where(steps >= n_sup, nxt.q_halt, torch.maximum(nxt.q_halt, nxt.q_continue)))


# the log-window sums of DeepSupervision.step, and how a record reads them: means over the rows that halted
# in the window (`count`) or over its optimizer steps
PER_ROW = ("accuracy", "exact_accuracy", "halt_accuracy", "steps", "calls", "flops")
PER_STEP = ("lm_loss", "halt_loss", "continue_loss", "loss")
RECORD = {"accuracy": "accuracy", "exact_accuracy": "exact_accuracy", "halt_accuracy": "halt_accuracy",
          "steps": "mean_steps", "calls": "net_calls", "flops": "flops"}
# checkpoints written before named metrics stored the window as one tensor in this order
LEGACY_WINDOW = ("count", *PER_ROW[:3], "steps", "calls", "flops", *PER_STEP, "steps_in_window")


class DeepSupervision:
    """The puzzle engine: one supervision step (and one optimizer step) per call.

    `streaming` (the reference code): rows that halted take the matching rows of a fresh batch
    every step, so examples stay 1..N_sup steps. `per_batch` (the paper's pseudo-code): a batch
    runs until every row has halted or reached N_sup; halted rows keep their state and drop out
    of the loss; then the next batch comes.

    Exploration draws are made for the *global* batch from one seeded generator and sliced by
    rank, so R processes of B/R rows take the same decisions as one process of B rows.
    """

    progress = {"loss": "loss", "accuracy": "acc", "exact_accuracy": "exact"}

    def __init__(self, cfg: RunConfig, dist: Dist | None = None, device: torch.device = torch.device("cpu"),
                 info: dict | None = None, task=None, dtype: torch.dtype = torch.float32):
        self.run_cfg, self.cfg = cfg, cfg.recursion
        self.dist, self.device, self.info, self.task = dist or Dist(), device, info, task
        self.dtype = dtype  # the model's compute dtype: the carried state's
        self.global_batch = cfg.train.batch_size
        self.rank = self.dist.rank
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.stages = curriculum_stages(self.cfg.curriculum)
        self.carry: Carry | None = None
        self.loss_fn = step_loss  # replaceable: bench/step_time.py times a compiled copy

    # ------------------------------------------------------------------ the Engine interface

    def depth(self, step: int, total: int) -> Depth | None:
        """The (T, n) of optimizer step `step` of `total` under the depth curriculum (None: the model's own)."""
        for frac, T, n in self.stages:
            if step < frac * total:
                return T, n
        return None

    def step(self, model, next_batch: Callable[[], dict[str, torch.Tensor]], step: int, total: int) -> StepResult:
        batch = next_batch() if self.carry is None or self.needs_batch(self.carry) else None
        if self.carry is None:
            self.carry = Carry.empty(model, batch["inputs"], batch["labels"])
        self.carry, loss, m = self.advance(model, self.carry, batch, self.depth(step, total))
        B, w = self.global_batch, self.cfg.halt_weight
        sums = {"count": m["count"], **{k: m[k] for k in PER_ROW},
                **{k: m[k] / B for k in PER_STEP[:3]},
                "loss": (m["lm_loss"] + w * (m["halt_loss"] + m["continue_loss"])) / B}
        return StepResult(loss=loss.total / B, sums=sums,
                          totals={"examples": m["count"], "calls": m["calls"], "flops": m["flops"]})

    def record(self, window: dict[str, float], steps: int) -> dict:
        n = max(window["count"], 1.0)
        rec = {k: window[k] / steps for k in PER_STEP}
        rec.update({RECORD[k]: window[k] / n for k in PER_ROW})
        rec["halted"] = int(window["count"])
        return rec

    def summary(self, totals: dict[str, float], model) -> dict:
        n = max(totals["examples"], 1.0)
        return {"net_calls_per_step": model.net_calls, "train_net_calls_per_example": totals["calls"] / n,
                "train_flops_per_example": totals["flops"] / n}

    def state_dict(self) -> dict[str, torch.Tensor]:
        # the carry is gathered in rank order, so a resume may use any number of processes
        tensors = {k: self.dist.gather_rows(v) for k, v in self.carry.to_dict().items()}
        tensors["rng.explore"] = self.gen.get_state()
        return tensors

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        self.gen.set_state(tensors["rng.explore"])
        full = Carry.from_dict({k: v for k, v in tensors.items() if k.startswith("carry.")})
        B = self.global_batch // self.dist.world
        rows = slice(self.rank * B, (self.rank + 1) * B)
        self.carry = Carry(state=tuple(s[rows].to(self.device, self.dtype) for s in full.state),
                           **{k: getattr(full, k)[rows].to(self.device) for k in Carry.TENSORS})

    def evaluate(self, model, split, limit: int | None = None) -> dict:
        """All N_sup steps at the model's full depth (a curriculum only shapes training), summed over ranks."""
        from .evaluate import evaluate

        c = self.run_cfg
        return evaluate(model, split, c.recursion.n_sup, c.eval.batch_size or c.train.batch_size, self.device,
                        c.eval.halt, c.recursion.act, self.dist, c.eval.max_examples if limit is None else limit,
                        self.task, self.info, c.recursion.feedback, c.eval.guidance, c.eval.halt_threshold)

    def eval_line(self, res: dict) -> str:
        vote = res.get("vote", {})
        voted = (f"; voted pass@1 {vote['pass@1']:.3f}, pass@2 {vote['pass@2']:.3f} (per test input)"
                 if "pass@2" in vote else "")
        return (f"test exact {res['exact_accuracy']:.3f} (per example), token {res['token_accuracy']:.3f}, adaptive "
                f"halting {res['exact_adaptive']:.3f} with {res['mean_steps_adaptive']:.1f} steps{voted}")

    # ------------------------------------------------------------------ one supervision step over the carry

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

    def advance(self, model, carry: Carry, batch: dict[str, torch.Tensor] | None, depth: Depth | None = None
                ) -> tuple[Carry, StepLoss, dict[str, torch.Tensor]]:
        """Refill (if `batch`), run one supervision step at `depth`, decide halting.

        Returns (carry, StepLoss, metrics) where metrics are sums over rows that halted now.
        """
        cfg = self.cfg
        if batch is not None:
            fill = carry.halted
            # a fresh target path for every example that enters
            priority = self._priority(*carry.inputs.shape, fill.device) if cfg.targets != "label" else None
            carry = carry.refill(model, fill, batch, priority)
        active = ~carry.halted
        before = carry
        carry, out, score = carry.step(model, cfg.act, depth, active=active if cfg.schedule == "per_batch" else None)
        steps = before.steps + active.to(torch.int32)
        q_target = cfg.act == "q_learning" and model.training
        target = (continue_target(model, carry.state, before.tokens, before.puzzle_ids, steps, cfg.n_sup, depth)
                  if q_target else None)
        labels = step_target(cfg.targets, carry.inputs, carry.labels, carry.priority, steps, cfg.n_sup)
        weight = active.to(torch.float32)
        if cfg.step_weights != "uniform":
            weight = weight * step_weight(cfg.step_weights, steps, cfg.n_sup, cfg.step_decay)
        loss = self.loss_fn(out.logits, out.q_halt, out.q_continue, labels, weight, cfg.loss, cfg.act,
                            cfg.halt_weight, target, cfg.loss_precision)
        with torch.no_grad():
            u, m = self._explore(active.shape[0], active.device) if model.training else (None, None)
            done = active & halt_decision(steps, score, cfg.n_sup, u, m, cfg.exploration)
            if cfg.feedback == "prediction":  # the next step reads this answer (PAD stays PAD)
                carry = carry.feed(out.logits.argmax(-1), active)
            # the Q-learning target costs one more forward (no backward)
            calls = model.calls(depth)[0] * (2 if q_target else 1)
            flops = model.step_flops(model.training, depth) + (model.step_flops(False, depth) if q_target else 0.0)
            spent_calls = carry.calls + active * calls
            spent_flops = carry.flops + active * flops
            counted = done & (carry.labels != 0).any(-1)
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
        carry = replace(carry, steps=steps, halted=carry.halted | done, calls=spent_calls, flops=spent_flops)
        return carry, loss, metrics


def legacy_window(stacked: torch.Tensor) -> dict[str, torch.Tensor]:
    """The named window sums of a checkpoint written before named metrics (one tensor in LEGACY_WINDOW order)."""
    return {k: v for k, v in zip(LEGACY_WINDOW, stacked) if k != "steps_in_window"}

