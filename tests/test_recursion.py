"""The engine with a mock model whose halting logit is scripted per row."""

import pytest
import torch
from torch import nn

from recur.config import RecursionConfig, RunConfig, TrainConfig
from recur.dist import Dist
from recur.errors import RecurError
from recur.inference import infer
from recur.recursion import StepOutput, unroll
from recur.supervision import Carry, DeepSupervision, halt_decision, halt_score


def engine(cfg: RecursionConfig, global_batch: int, rank: int = 0, seed: int = 0, world: int = 1) -> DeepSupervision:
    return DeepSupervision(RunConfig(seed=seed, recursion=cfg, train=TrainConfig(batch_size=global_batch)),
                           Dist(rank=rank, world=world))


def empty(model, b):
    return Carry.empty(model, b["inputs"], b["labels"])


class Mock(nn.Module):
    """State h [B, 1]: counts the steps a row has taken. A row wants to halt once h >= its input[:, 0]."""

    net_calls = 1

    def calls(self, depth=None):
        return 1, 1

    def step_flops(self, training, depth=None):
        return 3.0 if training else 1.0

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(4))
        self.rows_seen = []

    def init_state(self, B):
        return (torch.zeros(B, 1),)

    def reset_state(self, state, mask):
        return (torch.where(mask.view(-1, 1), 0.0, state[0]),)

    def forward(self, state, inputs, puzzle_ids, step=None, trace=None, depth=None):
        self.rows_seen.append(len(inputs))
        h = state[0] + 1
        logits = self.w.expand(len(inputs), inputs.shape[1], 4) + 0  # [B, L, 4]
        q = (h[:, 0] - inputs[:, 0].float() + 0.5) * 10  # > 0 once h >= target
        return (h.detach(),), StepOutput(logits=logits, q_halt=q, q_continue=-q)


def batch(targets, B=None):
    t = torch.as_tensor(targets)
    return {"inputs": torch.stack([t, t], 1), "labels": torch.full((len(t), 2), 2), "puzzle_ids": torch.zeros(len(t), dtype=torch.long)}


def test_unroll_splits_no_grad_and_grad():
    seen = []
    f = lambda s: (seen.append(torch.is_grad_enabled()), s + 1)[1]  # noqa: E731
    assert unroll([f] * 7, 0, 3) == 7
    assert seen == [False] * 4 + [True] * 3


def test_halting_scores_and_decision_rules():
    q_halt, q_cont = torch.tensor([-1.0, 1.0, -1.0, 1.0, 1.0]), torch.tensor([-2.0, 2.0, 0.0, 0.0, 0.0])
    out = StepOutput(logits=torch.zeros(5, 1, 1), q_halt=q_halt, q_continue=q_cont)
    assert torch.equal(halt_score(out, "halt"), q_halt)
    assert torch.equal(halt_score(out, "q_learning"), q_halt - q_cont)  # HRM: halt when q_halt > q_continue
    steps = torch.tensor([1, 3, 16, 2, 5])
    assert halt_decision(steps, halt_score(out, "halt"), 16).tolist() == [False, True, True, True, True]
    assert halt_decision(steps, halt_score(out, "q_learning"), 16).tolist() == [True, False, True, True, True]
    assert halt_decision(steps, halt_score(out, "off"), 16).tolist() == [False, False, True, False, False]
    u = torch.tensor([0.0, 0.0, 0.0, 0.9, 0.05])  # rows 0,1,2,4 explore (u < 0.1)
    m = torch.tensor([4, 4, 4, 9, 5], dtype=torch.int32)
    got = halt_decision(steps, q_halt, 16, u, m, 0.1)
    # row 1 wants to halt at 3 but must reach 4; row 2 is at N_sup (16 >= 4); row 4 reached its minimum 5
    assert got.tolist() == [False, False, True, True, True]
    assert halt_decision(torch.tensor([1]), torch.tensor([-5.0]), 1).tolist() == [True]


def test_streaming_refills_exactly_the_halted_rows():
    cfg = RecursionConfig(n_sup=4, exploration=0.0)
    eng = engine(cfg, 3)
    model = Mock()
    carry = empty(model, batch([1, 1, 1]))
    history = []
    for step in range(6):
        b = batch([1, 2, 9]) if step == 0 else batch([1, 1, 1])
        assert eng.needs_batch(carry)
        carry, loss, m = eng.advance(model, carry, b)
        history.append((carry.steps.tolist(), carry.halted.tolist(), carry.inputs[:, 0].tolist()))
    # row 0 (target 1) halts every step; row 1 halts after 2 steps; row 2 (target 9) hits N_sup=4
    assert history[0] == ([1, 1, 1], [True, False, False], [1, 2, 9])
    assert history[1] == ([1, 2, 2], [True, True, False], [1, 2, 9])
    assert history[2] == ([1, 1, 3], [True, True, False], [1, 1, 9])  # row 1 refilled with a target-1 example
    assert history[3] == ([1, 1, 4], [True, True, True], [1, 1, 9])  # row 2 stops at N_sup
    assert history[4] == ([1, 1, 1], [True, True, True], [1, 1, 1])  # and is refilled too


def test_per_batch_schedule_waits_for_all_rows_and_freezes_halted_ones():
    cfg = RecursionConfig(n_sup=5, exploration=0.0, schedule="per_batch")
    eng = engine(cfg, 2)
    model = Mock()
    carry = empty(model, batch([1, 3]))
    assert eng.needs_batch(carry)
    carry, loss, m = eng.advance(model, carry, batch([1, 3]))
    assert carry.halted.tolist() == [True, False] and m["count"].item() == 1
    assert not eng.needs_batch(carry)
    carry, loss, _ = eng.advance(model, carry, None)
    assert carry.state[0][:, 0].tolist() == [1.0, 2.0]  # halted row 0 keeps its state
    assert carry.steps.tolist() == [1, 2]
    carry, loss, m = eng.advance(model, carry, None)
    assert carry.halted.tolist() == [True, True] and m["steps"].item() == 3
    assert eng.needs_batch(carry)


def test_per_batch_loss_excludes_halted_rows():
    cfg = RecursionConfig(n_sup=5, exploration=0.0, schedule="per_batch", act="off")
    eng = engine(cfg, 2)
    model = Mock()
    carry = empty(model, batch([1, 1]))
    carry, loss_both, _ = eng.advance(model, carry, batch([1, 1]))
    carry.halted[0] = True
    carry, loss_one, _ = eng.advance(model, carry, None)
    torch.testing.assert_close(loss_one.total * 2, loss_both.total)


def test_exploration_draws_are_sliced_by_rank():
    cfg = RecursionConfig(n_sup=16, exploration=0.5)
    one = engine(cfg, 8, seed=3)
    r0, r1 = engine(cfg, 8, 0, 3, 2), engine(cfg, 8, 1, 3, 2)
    for _ in range(3):
        u, m = one._explore(8, "cpu")
        u0, m0 = r0._explore(4, "cpu")
        u1, m1 = r1._explore(4, "cpu")
        assert torch.equal(u, torch.cat([u0, u1])) and torch.equal(m, torch.cat([m0, m1]))
    assert m.min() >= 2 and m.max() <= 16


def test_exploration_holds_rows_back_at_the_expected_rate():
    cfg = RecursionConfig(n_sup=16, exploration=0.1)
    eng = engine(cfg, 4000)
    model = Mock()
    b = batch([1] * 4000)  # every row wants to halt after its first step
    carry = empty(model, b)
    carry, _, _ = eng.advance(model, carry, b)
    held = (~carry.halted).float().mean().item()
    # P(explore) * P(min steps > 1) = 0.1 * 1 (minimum is drawn from 2..16)
    assert 0.08 < held < 0.12


def test_infer_runs_all_steps_or_halts_adaptively():
    model = Mock()
    b = batch([1, 3, 20])
    full = infer(model, b["inputs"], b["puzzle_ids"], n_sup=5, halt="none")
    assert full.steps.tolist() == [5, 5, 5] and model.rows_seen == [3] * 5
    assert full.per_step.shape == (5, 3, 2) and full.halt_score.shape == (5, 3)
    model.rows_seen.clear()
    ada = infer(model, b["inputs"], b["puzzle_ids"], n_sup=5, halt="adaptive")
    assert ada.steps.tolist() == [1, 3, 5]  # never beyond N_sup
    assert model.rows_seen == [3, 2, 2, 1, 1]  # halted rows are not computed again
    # a halted row's answer and halting logit stay frozen
    assert torch.equal(ada.halt_score[1:, 0], ada.halt_score[0, 0].expand(4))


def test_carry_round_trips_through_a_dict():
    c = Carry(state=(torch.randn(2, 3), torch.randn(2, 3)), inputs=torch.ones(2, 4), labels=torch.zeros(2, 4),
              puzzle_ids=torch.zeros(2), steps=torch.tensor([1, 2]), halted=torch.tensor([True, False]),
              tokens=torch.ones(2, 4), priority=torch.rand(2, 4), calls=torch.tensor([3.0, 6.0]), flops=torch.ones(2))
    d = c.to_dict()
    back = Carry.from_dict(d)
    assert all(torch.equal(a, b) for a, b in zip(back.state, c.state))
    assert all(torch.equal(getattr(back, k), getattr(c, k)) for k in Carry.TENSORS)
    del d["carry.priority"]  # a carry from before per-step targets cannot be resumed: a clear error
    with pytest.raises(RecurError, match="lacks priority"):
        Carry.from_dict(d)


def test_q_learning_target_uses_one_extra_forward_on_the_new_state():
    cfg = RecursionConfig(n_sup=3, exploration=0.0, act="q_learning")
    eng = engine(cfg, 2)
    model = Mock()
    b = batch([5, 5])  # never wants to halt before N_sup
    carry = empty(model, b)
    losses = []
    for _ in range(3):
        carry, loss, m = eng.advance(model, carry, b if carry.halted.all() else None)
        losses.append(loss)
    assert model.rows_seen == [2] * 6  # two forwards per training step
    # hand-made target for step 1: the next forward sees h=2, q' = (2 - 5 + 0.5)*10 = -25, q_cont' = 25
    q_cont_step1 = torch.full((2,), -(1 - 5 + 0.5) * 10)
    target = torch.sigmoid(torch.maximum(torch.tensor(-25.0), torch.tensor(25.0))).expand(2)
    want = torch.nn.functional.binary_cross_entropy_with_logits(q_cont_step1, target, reduction="sum")
    torch.testing.assert_close(losses[0].cont, want)
    # at the last step (steps = N_sup) the target is the next q_halt alone: sigmoid((4-5+0.5)*10)
    q_cont_step3 = torch.full((2,), -(3 - 5 + 0.5) * 10)
    want3 = torch.nn.functional.binary_cross_entropy_with_logits(
        q_cont_step3, torch.sigmoid(torch.tensor(-5.0)).expand(2), reduction="sum")
    torch.testing.assert_close(losses[2].cont, want3)
    model.eval()
    model.rows_seen.clear()
    eng.advance(model, empty(model, b), b)
    assert model.rows_seen == [2]  # no extra forward outside training
