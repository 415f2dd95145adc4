"""Inference paths: continuous batching, guidance and feedback give what the plain path gives."""

import pytest
import torch

from conftest import INFO, tiny_model_cfg
from recur.inference import infer
from recur.models import build_model


def trained_looking(seed=0, **kw):
    """A tiny TRM whose halting head fires at different steps for different puzzles."""
    torch.manual_seed(seed)
    model = build_model(tiny_model_cfg(**kw), INFO).eval()
    x = torch.randint(1, 6, (64, 16))
    with torch.no_grad():
        model.q_head.weight.normal_(0, 1.0)
        model.q_head.bias.zero_()
        score = infer(model, x, torch.zeros(64, dtype=torch.long), 6, "none").halt_score
        model.q_head.bias[0] = -score.quantile(0.85)  # ~15% of (step, puzzle) pairs want to halt
    return model


@pytest.mark.parametrize("halt", ["adaptive", "none"])
@pytest.mark.parametrize("batch_size", [1, 4, 7, 64])
def test_continuous_batching_answers_every_puzzle_once_as_the_batch_path_does(halt, batch_size):
    model = trained_looking()
    x, ids = torch.randint(1, 6, (23, 16)), torch.randint(0, 3, (23,))
    ref = infer(model, x, ids, 6, halt)
    got = infer(model, x, ids, 6, halt, batch_size=batch_size)
    if halt == "adaptive":
        assert 1 < len(set(ref.steps.tolist()))  # the test means something: puzzles halt at different steps
    assert torch.equal(got.steps, ref.steps) and (got.steps <= 6).all() and (got.steps >= 1).all()
    assert torch.equal(got.tokens, ref.tokens) and torch.equal(got.per_step, ref.per_step)
    torch.testing.assert_close(got.logits, ref.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.halt_score, ref.halt_score, atol=1e-5, rtol=1e-5)


def test_continuous_batching_keeps_the_batch_full_while_puzzles_wait():
    model = trained_looking()
    sizes = []
    forward = model.forward
    model.forward = lambda state, tokens, *a, **k: (sizes.append(tokens.shape[0]), forward(state, tokens, *a, **k))[1]
    x, ids = torch.randint(1, 6, (40, 16)), torch.zeros(40, dtype=torch.long)
    res = infer(model, x, ids, 6, "adaptive", batch_size=8)
    assert sum(sizes) == int(res.steps.sum())  # no step is ever computed for a finished puzzle
    # full batches while puzzles wait; once the queue is empty it only shrinks
    assert sizes[0] == 8 and all(a >= b for a, b in zip(sizes, sizes[1:])) and sizes.count(8) > len(sizes) // 2


@pytest.mark.parametrize("driver", ["batch", "stream"])
def test_guidance_one_is_plain_decoding_and_other_weights_change_only_the_readout(driver):
    model = trained_looking(step_embedding=4)
    x, ids = torch.randint(1, 6, (9, 16)), torch.zeros(9, dtype=torch.long)
    run = (lambda **k: infer(model, x, ids, 4, "none", **k)) if driver == "batch" else \
        (lambda **k: infer(model, x, ids, 4, "none", batch_size=4, **k))
    plain, w1, w2 = run(), run(guidance=1.0), run(guidance=2.0)
    assert torch.equal(plain.tokens, w1.tokens)
    assert not torch.equal(plain.logits, w2.logits)
    torch.testing.assert_close(plain.halt_score, w2.halt_score)  # the state (and so the halting head) is untouched


def test_feedback_feeds_the_previous_answer_back():
    model = trained_looking(step_embedding=4)
    x, ids = torch.randint(1, 6, (5, 16)), torch.zeros(5, dtype=torch.long)
    x[:, -2:] = 0  # PAD stays PAD
    seen = []
    forward = model.forward
    model.forward = lambda state, tokens, *a, **k: (seen.append(tokens.clone()), forward(state, tokens, *a, **k))[1]
    res = infer(model, x, ids, 3, "none", feedback="prediction")
    assert torch.equal(seen[0], x)
    expected = torch.where(x == 0, 0, res.per_step[0])
    assert torch.equal(seen[1], expected)
    seen.clear()
    stream = infer(model, x, ids, 3, "none", batch_size=2, feedback="prediction")
    assert torch.equal(stream.tokens, res.tokens)


def test_a_higher_halting_threshold_halts_later_on_both_paths():
    model = trained_looking()
    x, ids = torch.randint(1, 6, (30, 16)), torch.zeros(30, dtype=torch.long)
    low, high = infer(model, x, ids, 6, "adaptive"), infer(model, x, ids, 6, "adaptive", threshold=1.0)
    assert (high.steps >= low.steps).all() and (high.steps > low.steps).any()
    stream = infer(model, x, ids, 6, "adaptive", batch_size=8, threshold=1.0)
    assert torch.equal(stream.steps, high.steps) and torch.equal(stream.tokens, high.tokens)


def test_sampled_trajectories_keep_the_one_the_halting_head_trusts_most():
    from recur.inference import infer_sampled

    model = trained_looking()
    x, ids = torch.randint(1, 6, (12, 16)), torch.zeros(12, dtype=torch.long)
    plain = infer(model, x, ids, 4)
    one = infer_sampled(model, x, ids, 4, samples=1, noise=0.5)
    assert torch.equal(one.tokens, plain.tokens) and torch.equal(one.per_step, plain.per_step)
    many = infer_sampled(model, x, ids, 4, samples=6, noise=0.5)
    assert many.per_step.shape == plain.per_step.shape and many.halt_score.shape == plain.halt_score.shape
    assert (many.halt_score[-1] >= plain.halt_score[-1]).all()  # never below the noise-free trajectory
    assert (many.halt_score[-1] > plain.halt_score[-1]).any()  # and the noise found better-scored ones
    assert torch.equal(many.per_step[-1], many.tokens)
