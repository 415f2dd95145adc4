"""Decoding (recur.generate): greedy decoding reproduces full-recompute argmaxes for every variant, seeded sampling,
streaming depths, warm starts, KV budgets, stop tokens and the one-line errors."""

import pytest
import torch

from lm_helpers import EXITS, VARIANTS, lm, one_thread, tokens  # noqa: F401  (one_thread: a fixture)
from recur.errors import RecurError
from recur.generate import generate, sample, stream

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", VARIANTS)
def test_greedy_decoding_equals_full_recompute(name):
    model = lm(name).eval()
    prompt = tokens(length=4)
    out = generate(model, prompt, 8)
    seq = torch.cat([prompt, out.tokens], 1)
    with torch.no_grad():
        full = model(seq)
    assert torch.equal(full.logits[:, 3:-1].argmax(-1), out.tokens)
    assert torch.equal(full.depth[:, 3:-1], out.depths)


@pytest.mark.parametrize("exit", list(EXITS))
def test_greedy_decoding_with_exits_equals_teacher_forcing(exit):
    """Teacher-forced adaptive exits (one parallel call) give the tokens and depths of adaptive decoding."""
    model = lm("hybrid").eval()
    with torch.no_grad():
        model.looped.exit_router.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    prompt, options = tokens(length=4), dict(depth=6, exit=exit, threshold=EXITS[exit][1])
    out = generate(model, prompt, 8, **options)
    with torch.no_grad():
        full = model(torch.cat([prompt, out.tokens], 1), **options)
    assert torch.equal(full.logits[:, 3:-1].argmax(-1), out.tokens)
    assert torch.equal(full.depth[:, 3:-1], out.depths)
    assert int(out.depths.min()) >= 1 and int(out.depths.max()) <= 6


@pytest.mark.parametrize("name", ["vanilla", "expert", "looped"])
def test_sampling_is_deterministic_under_a_seed(name):
    model = lm(name)
    prompt = tokens(length=3)
    a = generate(model, prompt, 10, temperature=1.0, top_k=8, seed=3).tokens
    b = generate(model, prompt, 10, temperature=1.0, top_k=8, seed=3).tokens
    c = generate(model, prompt, 10, temperature=1.0, top_k=8, seed=4).tokens
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert model.training  # the mode comes back


def test_top_k_restricts_the_draws():
    logits = torch.tensor([[5.0, 4.0, -1.0, -2.0]]).repeat(200, 1)
    draws = sample(logits, 2.0, 2, torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == {0, 1}
    assert torch.equal(sample(logits, 0.0, 0, torch.Generator()), torch.zeros(200, dtype=torch.long))


def test_stream_yields_each_token_with_its_depth():
    model = lm("looped").eval()
    steps = list(stream(model, [3, 5, 7], 5, depth=3))
    assert len(steps) == 5 and all(s.token.shape == (1,) and s.depth.tolist() == [3] for s in steps)


def test_warm_start_is_deterministic_and_changes_the_states():
    model = lm("looped").eval()
    prompt = tokens(length=4)
    runs = [list(stream(model, prompt, 6, depth=3, warm_start=True)) for _ in range(2)]
    a, b = ([s.token for s in run] for run in runs)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with torch.no_grad():  # the warm-started second token sees a different s_0 than the cold one
        cache = model.new_cache(2, depth=3)
        first = model(prompt, cache=cache, depth=3)
        warm = model(a[0].unsqueeze(1), cache=cache, depth=3, init_state=first.state[:, -1:])
    assert not torch.allclose(warm.state, model(torch.cat([prompt, a[0].unsqueeze(1)], 1), depth=3).state[:, -1:])


def test_kv_budget_at_full_depth_is_exact_and_one_slot_runs():
    model = lm("looped").eval()
    prompt = tokens(length=4)
    exact = generate(model, prompt, 6, depth=4).tokens
    assert torch.equal(generate(model, prompt, 6, depth=4, kv_budget=4).tokens, exact)
    shared = generate(model, prompt, 6, depth=4, kv_budget=1)
    assert shared.tokens.shape == exact.shape and int(shared.tokens.min()) >= 0


def test_stop_token_finishes_a_sequence():
    model = lm("vanilla").eval()
    prompt = tokens(length=4)
    free = generate(model, prompt, 6).tokens
    stop = int(free[0, 1])
    out = generate(model, prompt, 6, stop=stop)
    row = out.tokens[0].tolist()
    cut = row.index(stop)
    assert all(t == 0 for t in row[cut + 1:]) and all(d == 0 for d in out.depths[0, cut + 1:].tolist())


@pytest.mark.parametrize("call, needle", [
    (lambda m: generate(m, tokens(length=15), 2), "exceed the model's context of 16"),
    (lambda m: generate(m, torch.zeros(1, 0, dtype=torch.long), 2), "prompt is empty"),
    (lambda m: generate(m, tokens(length=2), 0), "max_new_tokens must be >= 1"),
    (lambda m: generate(m, tokens(length=2), 2, depth=3), "family=recurrent only"),
])
def test_bad_requests_are_one_line_errors(call, needle):
    with pytest.raises(RecurError, match=needle) as e:
        call(lm("vanilla"))
    assert "\n" not in str(e.value)


def test_exit_router_on_a_model_without_one_is_an_error():
    with pytest.raises(RecurError, match="exit_router=true"):
        generate(lm("looped"), tokens(length=2), 2, exit="router")
