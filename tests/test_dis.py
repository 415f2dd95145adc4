"""Deep Improvement Supervision: per-step targets, step embedding, cost accounting, curriculum, profiler."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import INFO, tiny_model_cfg
from recur.config import RecursionConfig, load_config
from recur.errors import RecurError
from recur.evaluate import evaluate
from recur.models import build_model
from recur.plots import have_matplotlib
from recur.profile import profile, verdict, write
from recur.config import RunConfig, TrainConfig
from recur.supervision import Carry, DeepSupervision
from recur.runlog import read_metrics
from recur.targets import step_target, step_weight
from recur.train import Trainer


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), n_sup=st.integers(1, 9), kind=st.sampled_from(["input_to_label", "mask"]))
def test_targets_run_from_input_to_label_monotonically_and_never_touch_givens(seed, n_sup, kind):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(2, 8, (5, 20), generator=g)
    labels[:, -3:] = 0  # padding: never supervised
    given_ = torch.rand(5, 20, generator=g) < 0.4
    inputs = torch.where(given_ | (labels == 0), labels, 1)  # 1 = blank
    priority = torch.rand(5, 20, generator=g)
    frames = [step_target(kind, inputs, labels, priority, torch.full((5,), s), n_sup) for s in range(n_sup + 1)]
    assert torch.equal(frames[0], torch.where(labels == 0, 0, inputs))  # frame 0: the input (PAD stays ignored)
    assert torch.equal(frames[-1], labels)
    open_ = (inputs != labels) & (labels != 0)
    dist = [((f != labels) & open_).sum(-1) for f in frames]
    for a, b, fa, fb in zip(dist, dist[1:], frames, frames[1:]):
        assert (b <= a).all()  # Hamming distance to the label never grows...
        assert ((fa == labels) <= (fb == labels)).all()  # ...and a filled cell stays filled
    for f in frames:
        assert torch.equal(f[~open_], labels[~open_])  # givens and PAD never change
        assert ((f == labels) | (f == inputs)).all()  # a cell shows either the puzzle's token or the answer
    if kind == "input_to_label":  # exactly floor(s * d / N_sup) cells filled at step s
        d = open_.sum(-1)
        for s, f in enumerate(frames):
            assert torch.equal(((f == labels) & open_).sum(-1), s * d // n_sup)


def test_label_targets_are_the_label_and_step_weights_average_one():
    x, y = torch.ones(2, 4, dtype=torch.long), torch.full((2, 4), 3)
    assert torch.equal(step_target("label", x, y, torch.rand(2, 4), torch.tensor([1, 2]), 4), y)
    steps = torch.arange(1, 7)
    for kind in ("uniform", "linear", "decay"):
        w = step_weight(kind, steps, 6, 0.7)
        assert w.mean().item() == pytest.approx(1.0)
    assert (step_weight("linear", steps, 6, 0.7).diff() > 0).all()
    assert (step_weight("decay", steps, 6, 0.7).diff() < 0).all()


def test_step_embedding_reaches_the_model():
    model = build_model(tiny_model_cfg(step_embedding=4), INFO)
    x, ids = torch.randint(1, 6, (2, 16)), torch.zeros(2, dtype=torch.long)
    state = model.init_state(2)
    _, a = model(state, x, ids, torch.tensor([1, 1]))
    _, b = model(state, x, ids, torch.tensor([3, 3]))
    assert not torch.allclose(a.logits, b.logits)  # the step index changes the answer
    a.logits.sum().backward()
    assert model.step_emb.grad[0].abs().sum() > 0 and model.step_emb.grad[1:].abs().sum() == 0
    with pytest.raises(ValueError, match="pass `step`"):
        model(state, x, ids)


def run_engine(cfg: RecursionConfig, model, steps: int):
    """Rows start together and run `steps` supervision steps; returns the last metrics."""
    eng = DeepSupervision(RunConfig(recursion=cfg, train=TrainConfig(batch_size=3)))
    b = {"inputs": torch.randint(1, 6, (3, 16)), "labels": torch.randint(2, 6, (3, 16)),
         "puzzle_ids": torch.zeros(3, dtype=torch.long)}
    carry, m = Carry.empty(model, b["inputs"]), None
    for i in range(steps):
        carry, loss, m = eng.advance(model, carry, b if i == 0 else None)
        loss.total.backward()
    return carry, m


@pytest.mark.parametrize("arch, act, T, n, calls_per_step", [
    ("trm", "off", 2, 2, 6), ("trm", "halt", 3, 1, 6), ("trm", "q_learning", 1, 2, 3), ("transformer", "off", 1, 1, 1)])
def test_net_calls_per_example_match_a_hand_count(arch, act, T, n, calls_per_step):
    n_sup = 3
    model = build_model(tiny_model_cfg(arch=arch, T=T, n=n), INFO)
    cfg = RecursionConfig(n_sup=n_sup, act=act, exploration=0.0, schedule="per_batch")
    carry, m = run_engine(cfg, model, n_sup)  # q_halt starts at -5: nobody halts before N_sup
    assert carry.halted.all() and m["count"].item() == 3
    per_step = T * (n + 1) if arch == "trm" else 1
    hand = n_sup * per_step * (2 if act == "q_learning" else 1)  # Q-learning: one more forward per step
    assert per_step == calls_per_step and model.net_calls == per_step
    assert m["calls"].item() / 3 == pytest.approx(hand)
    assert m["flops"].item() / 3 > 0


def test_dis_step_uses_the_step_target_and_feeds_back_its_answer():
    model = build_model(tiny_model_cfg(step_embedding=3, T=1, n=2), INFO)
    cfg = RecursionConfig(n_sup=3, act="off", targets="input_to_label", feedback="prediction")
    eng = DeepSupervision(RunConfig(recursion=cfg, train=TrainConfig(batch_size=3)))
    b = {"inputs": torch.randint(1, 6, (3, 16)), "labels": torch.randint(2, 6, (3, 16)),
         "puzzle_ids": torch.zeros(3, dtype=torch.long)}
    seen = []
    forward = model.forward
    model.forward = lambda state, tokens, ids, step, **k: (seen.append((tokens.clone(), step.clone())),
                                                            forward(state, tokens, ids, step, **k))[1]
    carry = Carry.empty(model, b["inputs"])
    carry, _, _ = eng.advance(model, carry, b)
    assert torch.equal(seen[0][0], b["inputs"]) and seen[0][1].tolist() == [1, 1, 1]
    assert (carry.priority > 0).all()  # a target path was drawn on entry
    carry, _, _ = eng.advance(model, carry, None)
    assert seen[1][1].tolist() == [2, 2, 2] and not torch.equal(seen[1][0], b["inputs"])  # its own answer


def test_dis_without_act_off_is_a_config_error():
    with pytest.raises(RecurError, match="recursion.act=off"):
        load_config("micro", ["recursion.targets=mask"])
    with pytest.raises(RecurError, match="FRACTION:T,n"):
        load_config("micro", ["recursion.curriculum=0.5:2"])
    with pytest.raises(RecurError, match="fractions must increase"):
        load_config("micro", ["recursion.curriculum=0.6:1,1 0.3:1,2"])


def micro(tmp_path, *extra):
    return load_config("micro", [f"data.dir={tmp_path / 'data'}", "eval.show=0", *extra])


def test_dis_micro_run_learns_and_logs_its_cost(tmp_path):
    cfg = micro(tmp_path, "model.T=1", "model.n=2", "model.step_embedding=4", "recursion.act=off",
                "recursion.targets=input_to_label", "recursion.feedback=prediction", "train.steps=60",
                "train.log_every=10", "train.eval_every=60", "optim.lr=3e-3")
    summary = Trainer(cfg, tmp_path / "run", say=lambda m: None).fit()
    train = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "train"]
    assert train[-1]["lm_loss"] < 0.8 * train[0]["lm_loss"]
    assert train[-1]["net_calls"] == pytest.approx(4 * 3)  # N_sup * T * (n+1), no halting
    assert summary["train_net_calls_per_example"] == pytest.approx(12)
    assert summary["eval"]["net_calls"] == pytest.approx(12)


def test_curriculum_grows_the_depth_and_counts_the_calls(tmp_path):
    cfg = micro(tmp_path, "model.T=2", "model.n=2", "recursion.curriculum=0.5:1,1", "train.steps=12",
                "recursion.act=off")
    trainer = Trainer(cfg, tmp_path / "run", say=lambda m: None)
    depths = []
    advance = trainer.engine.advance
    trainer.engine.advance = lambda model, carry, batch, depth: (depths.append(depth),
                                                                 advance(model, carry, batch, depth))[1]
    summary = trainer.fit()
    assert depths == [(1, 1)] * 6 + [None] * 6  # None: the model's own (2, 2)
    # examples run N_sup=4 steps: the first three cohorts at 2 calls/step, the rest at 6
    assert summary["train_net_calls_per_example"] == pytest.approx((4 * 2 + (2 * 2 + 2 * 6) + 4 * 6) / 3)
    assert summary["eval"]["net_calls"] == 4 * 6  # evaluation runs the full depth


def test_profiler_on_a_trained_model_gives_finite_margins_and_a_plot(tmp_path):
    cfg = micro(tmp_path, "train.steps=30", "optim.lr=3e-3")
    trainer = Trainer(cfg, tmp_path / "run", say=lambda m: None)
    trainer.fit()
    res = profile(trainer.eval_model, trainer.test_split, 4, 16, torch.device("cpu"))
    points = res["points"][1:]
    assert len(points) == 4 * cfg.model.T  # one point per answer update
    assert [p["net_calls"] for p in points] == [3.0 * (i + 1) for i in range(len(points))]
    assert all(torch.isfinite(torch.tensor([p["margin"] for p in points])))
    assert 0 <= res["dead_fraction"] <= 1 and res["enough_net_calls"] <= res["full_net_calls"]
    assert "net calls per example" in verdict(res)
    path, png = write(res, tmp_path / "prof")
    assert json.loads(path.read_text())["examples"] == 32
    assert (png.stat().st_size > 0) if have_matplotlib() else png is None  # matplotlib is an optional extra
    # the last point is the evaluated answer; scored on open cells only, it is exact at least as often
    ev = evaluate(trainer.eval_model, trainer.test_split, 4, 16, torch.device("cpu"))
    assert points[-1]["exact_accuracy"] >= ev["exact_accuracy"] and ev["examples"] == 32
