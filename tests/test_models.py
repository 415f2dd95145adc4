import math

import pytest
import torch

from conftest import INFO, tiny_model_cfg
from recur.config import ModelConfig
from recur.losses import log_stablemax, step_loss, token_ce
from recur.models import build_model
from recur.models.layers import Attention, Linear, ffn_width, rope_tables, trunc_normal_


@pytest.mark.parametrize("mixer,pos", [("attention", "rope"), ("attention", "learned"), ("attention", "none"),
                                       ("mlp_t", "none")])
def test_step_shapes_and_detached_state(mixer, pos):
    model = build_model(tiny_model_cfg(mixer=mixer, pos=pos), INFO)
    B = 5
    state = model.init_state(B)
    assert [tuple(s.shape) for s in state] == [(B, 2 + 16, 32)] * 2
    x = torch.randint(1, 6, (B, 16))
    new, out = model(state, x, torch.tensor([0, 1, 2, 0, 1]))
    assert out.logits.shape == (B, 16, 6) and out.q_halt.shape == (B,) and out.q_continue.shape == (B,)
    assert out.q_halt.dtype == torch.float32
    assert not any(s.requires_grad for s in new)
    assert out.logits.requires_grad


def test_reference_parameter_counts():
    """The reference's counts (puzzle-embedding table excluded): 6,828,034 TRM-Att and 5,028,866 TRM-MLP on Sudoku."""
    info = {"vocab_size": 11, "seq_len": 81, "num_puzzle_ids": 1}
    for kw, want in [({}, 6_828_034), ({"mixer": "mlp_t", "pos": "none"}, 5_028_866)]:
        m = build_model(ModelConfig(**kw), info)
        assert sum(p.numel() for n, p in m.named_parameters() if not n.startswith("puzzle_emb")) == want


def test_ffn_width_rounds_up_to_256():
    assert ffn_width(512, 4) == 1536 and ffn_width(97, 4) == 512 and ffn_width(64, 4) == 256


@pytest.mark.parametrize("T,n", [(3, 2), (2, 4), (1, 3)])
def test_gradients_only_through_last_cycle(T, n):
    model = build_model(tiny_model_cfg(T=T, n=n), INFO)
    grad_flags = []
    orig = model.net.forward

    def spy(h, inj, rope):
        grad_flags.append(torch.is_grad_enabled())
        return orig(h, inj, rope)

    model.net.forward = spy
    _, out = model(model.init_state(2), torch.randint(1, 6, (2, 16)), torch.zeros(2, dtype=torch.long))
    assert grad_flags == [False] * ((T - 1) * (n + 1)) + [True] * (n + 1)
    assert model.net_calls == T * (n + 1) == len(grad_flags)
    out.logits.sum().backward()
    assert all(p.grad is not None for n_, p in model.net.named_parameters())


def test_one_step_gradient_and_separate_nets():
    """HRM's schedule: L,L,H,L,L,H with gradients only through the final L and H updates."""
    model = build_model(tiny_model_cfg(T=2, n=2, grad="one_step", separate_nets=True), INFO)
    calls = []
    for name in ("net", "net_y"):
        orig = getattr(model, name).forward
        getattr(model, name).forward = (lambda o, nm: lambda h, inj, rope: (
            calls.append((nm, torch.is_grad_enabled())), o(h, inj, rope))[1])(orig, name)
    _, out = model(model.init_state(1), torch.randint(1, 6, (1, 16)), torch.zeros(1, dtype=torch.long))
    assert [c[0] for c in calls] == ["net", "net", "net_y"] * 2
    assert [c[1] for c in calls] == [False] * 4 + [True] * 2
    out.logits.sum().backward()
    assert all(p.grad is not None for p in model.net_y.parameters())
    assert all(p.grad is not None for p in model.net.parameters())


def test_embedding_scale_prefix_and_puzzle_rows():
    model = build_model(tiny_model_cfg(prefix_len=2, puzzle_emb_dim=40), INFO)
    with torch.no_grad():
        model.puzzle_emb.normal_()
    tokens = torch.randint(1, 6, (3, 16))
    x = model.embed_input(tokens, torch.tensor([0, 2, 2]))
    # puzzle vector (40 wide) fills prefix token 0 and the first 8 dims of token 1; the rest is zero
    flat = x[:, :2].reshape(3, -1) / math.sqrt(32)
    torch.testing.assert_close(flat[:, :40], model.puzzle_emb[[0, 2, 2]])
    assert torch.all(flat[:, 40:] == 0)
    torch.testing.assert_close(x[:, 2:], math.sqrt(32) * model.embed[tokens])


def test_token_embedding_is_scaled_by_sqrt_d():
    model = build_model(tiny_model_cfg(prefix_len=0, puzzle_emb_dim=0), INFO)
    tokens = torch.randint(0, 6, (2, 16))
    torch.testing.assert_close(model.embed_input(tokens, torch.zeros(2, dtype=torch.long)),
                               math.sqrt(32) * model.embed[tokens])


def test_init_follows_reference():
    model = build_model(tiny_model_cfg(), INFO)
    assert torch.all(model.q_head.weight == 0) and torch.all(model.q_head.bias == -5)
    assert torch.all(model.puzzle_emb == 0)
    names = dict(model.named_parameters())
    assert "y_init" not in names and "z_init" not in names  # fixed, not trained...
    assert {"y_init", "z_init"} <= set(model.state_dict())  # ...but saved
    y, z = model.init_state(2)
    assert torch.equal(y[1, 5], model.y_init) and torch.equal(z[0, 0], model.z_init)


def test_trunc_normal_has_the_requested_std_and_bound():
    t = trunc_normal_(torch.empty(400_000), std=0.5)
    assert abs(t.std().item() - 0.5) < 0.005
    var_unit = 1 - 4 * math.exp(-2) / math.sqrt(2 * math.pi) / math.erf(math.sqrt(2))  # unit normal cut at ±2
    assert t.abs().max().item() <= 2 * 0.5 / math.sqrt(var_unit) + 1e-6  # ±2 std of the untruncated normal
    w = Linear(256, 512).weight
    assert abs(w.std().item() - 1 / 16) < 0.002


def test_reset_state_only_touches_masked_rows():
    model = build_model(tiny_model_cfg(), INFO)
    state = tuple(torch.randn(3, 18, 32) for _ in range(2))
    new = model.reset_state(state, torch.tensor([True, False, True]))
    assert torch.equal(new[0][1], state[0][1]) and torch.equal(new[1][1], state[1][1])
    assert torch.all(new[0][0] == model.y_init) and torch.all(new[1][2] == model.z_init)


def test_stablemax_matches_its_definition():
    logits = torch.tensor([[2.0, -1.0, 0.0]])
    s = torch.tensor([3.0, 0.5, 1.0])
    torch.testing.assert_close(log_stablemax(logits.double()), torch.log(s / s.sum()).double().unsqueeze(0))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_stablemax_float32_matches_float64_with_finite_gradients(dtype):
    """bf16 logits land on exactly 1.0 often; the 1/(1-x) branch must not make the gradient NaN there."""
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(4, 9, 11, generator=g) * 3).to(dtype)
    logits[:, 0, :3] = torch.tensor([1.0, 0.0, -1.0], dtype=dtype)
    labels = torch.randint(1, 11, (4, 9), generator=g)
    grads, losses = {}, {}
    for precision in ("float64", "float32"):
        x = logits.clone().requires_grad_()
        losses[precision] = token_ce(x, labels, "stablemax", precision).sum()
        losses[precision].backward()
        grads[precision] = x.grad.float()
        assert torch.isfinite(grads[precision]).all(), precision
    torch.testing.assert_close(losses["float32"], losses["float64"], rtol=1e-6, atol=0)
    torch.testing.assert_close(grads["float32"], grads["float64"], rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("kind", ["stablemax", "softmax"])
def test_token_loss_ignores_label_zero(kind):
    logits = torch.randn(2, 4, 6)
    labels = torch.tensor([[2, 3, 0, 0], [5, 5, 5, 5]])
    ce = token_ce(logits, labels, kind)
    assert torch.all(ce[0, 2:] == 0) and torch.all(ce[0, :2] > 0)
    if kind == "softmax":
        torch.testing.assert_close(ce[1], torch.nn.functional.cross_entropy(logits[1], labels[1], reduction="none"))


def test_step_loss_per_sequence_mean_sum_and_halt_target():
    logits = torch.full((2, 3, 4), -3.0)
    labels = torch.tensor([[1, 2, 3], [1, 2, 0]])
    logits[0, [0, 1, 2], [1, 2, 3]] = 3.0  # row 0 exactly right
    logits[1, 0, 1] = 3.0  # row 1: one of two supervised tokens right
    q = torch.tensor([0.3, -0.2], requires_grad=True)
    out = step_loss(logits, q, -q, labels, torch.tensor([True, True]), "softmax", "halt", 0.5)
    assert out.exact.tolist() == [True, False]
    torch.testing.assert_close(out.token_acc, torch.tensor([1.0, 0.5]))
    ce = token_ce(logits, labels, "softmax")
    lm = ce[0].mean() + ce[1, :2].mean()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(q, torch.tensor([1.0, 0.0]), reduction="sum")
    torch.testing.assert_close(out.total, lm + 0.5 * bce)
    only_first = step_loss(logits, q, -q, labels, torch.tensor([True, False]), "softmax", "off", 0.5)
    torch.testing.assert_close(only_first.total, ce[0].mean())
    target = torch.tensor([0.9, 0.2])
    with_cont = step_loss(logits, q, -q, labels, torch.tensor([True, True]), "softmax", "q_learning", 0.5, target)
    cont = torch.nn.functional.binary_cross_entropy_with_logits(-q, target, reduction="sum")
    torch.testing.assert_close(with_cont.total, lm + 0.5 * (bce + cont))


def test_hrm_settings_give_the_reference_parameter_count():
    """HRM = TRM with separate 4-layer nets: 27,275,266 parameters on Sudoku, as the reference."""
    m = build_model(ModelConfig(separate_nets=True, grad="one_step", layers=4, T=2, n=2, prefix_len=1),
                    {"vocab_size": 11, "seq_len": 81, "num_puzzle_ids": 1})
    assert sum(p.numel() for n, p in m.named_parameters() if not n.startswith("puzzle_emb")) == 27_275_266


def test_single_z_keeps_one_latent():
    model = build_model(tiny_model_cfg(single_z=True, T=2, n=2), INFO)
    state = model.init_state(3)
    assert len(state) == 1 and "y_init" not in model.state_dict()
    injections = []
    orig = model.net.forward
    model.net.forward = lambda h, inj, rope: (injections.append(inj if isinstance(inj, int) else "x"),
                                              orig(h, inj, rope))[1]
    new, out = model(state, torch.randint(1, 6, (3, 16)), torch.zeros(3, dtype=torch.long))
    assert injections == ["x", "x", 0] * 2  # z <- net(z, x) n times, then z <- net(z)
    assert len(new) == 1 and out.logits.shape == (3, 16, 6)


def test_transformer_baseline_is_one_pass_of_distinct_layers():
    model = build_model(tiny_model_cfg(arch="transformer", layers=5), INFO)
    assert model.net_calls == 1 and len(model.net.layers) == 5
    flags = []
    for layer in model.net.layers:
        orig = layer.forward
        layer.forward = (lambda o: lambda h, rope: (flags.append(torch.is_grad_enabled()), o(h, rope))[1])(orig)
    new, out = model(model.init_state(2), torch.randint(1, 6, (2, 16)), torch.zeros(2, dtype=torch.long))
    assert flags == [True] * 5 and len(new) == 1
    out.logits.sum().backward()
    assert all(p.grad is not None for p in model.net.parameters())


def test_bfloat16_attention_on_cpu_matches_float32():
    """The CPU bfloat16 path (unfused SDPA) gives float32's outputs and gradients within bf16 rounding."""
    attn = Attention(32, 4)
    h = torch.randn(3, 10, 32)
    rope = rope_tables(8, 10, 10000.0)
    outs, grads = [], []
    for dtype in (torch.float32, torch.bfloat16):
        x = h.to(dtype).detach().requires_grad_()
        out = attn(x, rope)
        out.float().square().sum().backward()
        outs.append(out.float())
        grads.append(x.grad.float())
    torch.testing.assert_close(outs[1], outs[0], atol=0.05, rtol=0.05)
    torch.testing.assert_close(grads[1], grads[0], atol=0.1, rtol=0.05)


def _saved(fn):
    """fn()'s result, and the tensors autograd keeps for its backward."""
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        out = fn()
    return out, kept


def test_recompute_gives_the_same_gradients_and_keeps_fewer_activations():
    """train.recompute (activation checkpointing in recursion.unroll): the same loss and gradients, with the
    backpropagated calls' activations not kept through the forward."""
    model = build_model(tiny_model_cfg(T=2, n=3), INFO)
    inputs, ids = torch.randint(1, 6, (4, 16)), torch.tensor([0, 1, 2, 1])
    results = []
    for recompute in (False, True):
        model.recompute = recompute
        model.zero_grad()
        out, kept = _saved(lambda: model(model.init_state(4), inputs, ids)[1])
        out.logits.float().square().mean().backward()
        results.append((out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                              if p.grad is not None}, sum(t.numel() for t in kept)))
    (logits0, grads0, kept0), (logits1, grads1, kept1) = results
    assert torch.equal(logits0, logits1) and grads0.keys() == grads1.keys()
    for n in grads0:
        torch.testing.assert_close(grads1[n], grads0[n], rtol=1e-5, atol=1e-7, msg=n)
    assert kept1 < kept0 / 3, (kept1, kept0)


@pytest.mark.parametrize("S,fused", [(16, False), (256, True)])
def test_cpu_bfloat16_training_attention_is_fused_for_long_sequences(S, fused):
    """The unfused kernel, which keeps [B, H, S, S] probabilities for backward, is only used to train short
    sequences on a CPU in bfloat16 (it is faster there); from 256 positions the fused one is."""
    attn = Attention(32, 4).to(torch.bfloat16)
    x = torch.randn(1, S, 32, dtype=torch.bfloat16, requires_grad=True)
    _, kept = _saved(lambda: attn(x, None))
    assert any(t.shape[-2:] == (S, S) for t in kept) != fused
