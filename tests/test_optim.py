import math

import torch
from torch import nn

from recur.config import OptimConfig
from recur.optim import EMA, AdamATan2, SignSGD, build_optimizers, lr_factor, set_lr


def test_adam_atan2_matches_hand_computed_steps():
    p = nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    opt = AdamATan2([p], lr=0.1, betas=(0.9, 0.95), weight_decay=0.2)
    grads = [[0.3, -0.1, 0.0], [-0.5, 0.2, 1.0]]
    want, m, v = [1.0, -2.0, 0.5], [0.0] * 3, [0.0] * 3
    for t, g in enumerate(grads, start=1):
        for i in range(3):
            want[i] *= 1 - 0.1 * 0.2  # decoupled decay first
            m[i] = m[i] + (g[i] - m[i]) * (1 - 0.9)
            v[i] = v[i] + (g[i] ** 2 - v[i]) * (1 - 0.95)
            want[i] -= 0.1 / (1 - 0.9**t) * math.atan2(m[i], math.sqrt(v[i]) / math.sqrt(1 - 0.95**t))
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        torch.testing.assert_close(p.detach(), torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)
    assert opt.state[p]["step"].item() == 2


def test_adam_atan2_corrects_the_first_moment_outside_the_atan2():
    # The reference scales by lr/(1-b1^t) *outside* atan2(m, sqrt(v)/sqrt(1-b2^t)); on step one that is
    # 10*atan(0.1) = 0.9967 times lr for any gradient size (correcting m inside would give pi/4).
    p = nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([1e-8, -3.0, 50.0, -1e4])
    AdamATan2([p], lr=0.01, betas=(0.9, 0.95), weight_decay=0.0).step()
    torch.testing.assert_close(p.detach(), -0.01 * 10 * math.atan(0.1) * torch.sign(p.grad))


def test_sign_sgd_sums_duplicate_rows_and_leaves_other_rows_alone():
    w = nn.Parameter(torch.ones(4, 2))
    emb = nn.functional.embedding(torch.tensor([1, 1, 3]), w, sparse=True)
    (emb * torch.tensor([[1.0, -1.0], [-3.0, 2.0], [1.0, 1.0]])).sum().backward()
    SignSGD([w], lr=0.1, weight_decay=0.5).step()
    # row 1: summed grad (-2, 1); row 3: (1, 1); rows 0 and 2 untouched (no decay either)
    want = torch.tensor([[1.0, 1.0], [0.95 + 0.1, 0.95 - 0.1], [1.0, 1.0], [0.95 - 0.1, 0.95 - 0.1]])
    torch.testing.assert_close(w.detach(), want)


def test_lr_schedule_warmup_constant_and_cosine():
    cfg = OptimConfig(lr=1.0, warmup=10)
    assert lr_factor(1, cfg, 100) == 0.1 and lr_factor(5, cfg, 100) == 0.5
    assert lr_factor(10, cfg, 100) == 1.0 and lr_factor(99, cfg, 100) == 1.0
    cos = OptimConfig(lr=1.0, warmup=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(10, cos, 110) == 1.0
    assert abs(lr_factor(60, cos, 110) - 0.55) < 1e-12
    assert abs(lr_factor(110, cos, 110) - 0.1) < 1e-12


def test_optimizer_groups_and_set_lr():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.puzzle_emb = nn.Parameter(torch.zeros(3, 2))
            self.lin = nn.Linear(2, 2)

    m = M()
    cfg = OptimConfig(lr=1e-3, puzzle_emb_lr=1e-2, warmup=4)
    opts = build_optimizers(m, cfg)
    assert isinstance(opts[0], AdamATan2) and isinstance(opts[1], SignSGD)
    assert {id(p) for p in opts[1].param_groups[0]["params"]} == {id(m.puzzle_emb)}
    set_lr(opts, cfg, 2, 100)
    assert opts[0].param_groups[0]["lr"] == 5e-4 and opts[1].param_groups[0]["lr"] == 5e-3


def test_ema_update_and_exclusions():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.puzzle_emb = nn.Parameter(torch.zeros(2))
            self.w = nn.Parameter(torch.zeros(2))

    m = M()
    ema = EMA(m, rate=0.9)
    assert set(ema.shadow) == {"w"}
    with torch.no_grad():
        m.w.fill_(1.0)
        m.puzzle_emb.fill_(3.0)
    ema.update(m)
    ema.update(m)
    w = ema.weights(m)
    torch.testing.assert_close(w["w"], torch.full((2,), 1 - 0.81))
    assert torch.equal(w["puzzle_emb"], m.puzzle_emb.detach())  # live value, not averaged


def test_sign_sgd_on_a_bfloat16_table_rounds_stochastically_and_unbiased():
    """Weight decay alone moves a bfloat16 row by less than bfloat16's spacing: plain rounding would keep it
    forever; stochastic rounding moves it with the right probability, so the mean follows the float32 math."""
    w = nn.Parameter(torch.full((4096, 1), 0.7, dtype=torch.bfloat16))
    opt = SignSGD([w], lr=1e-2, weight_decay=0.1, seed=3)
    for _ in range(20):
        w.grad = torch.sparse_coo_tensor(torch.arange(4096).unsqueeze(0), torch.zeros(4096, 1, dtype=torch.bfloat16),
                                         (4096, 1))
        opt.step()
    want = 0.7 * (1 - 1e-3) ** 20  # sign(0) = 0: weight decay only
    start = torch.tensor(0.7, dtype=torch.bfloat16).item()
    assert abs(w.float().mean().item() - start * want / 0.7) < 2e-4 and w.float().std() > 0
    again = nn.Parameter(torch.full((4096, 1), 0.7, dtype=torch.bfloat16))
    opt2 = SignSGD([again], lr=1e-2, weight_decay=0.1, seed=3)
    opt2.load_state_dict(opt.state_dict())  # the rounding stream is part of the state
    w.grad = again.grad = torch.sparse_coo_tensor(torch.arange(4096).unsqueeze(0),
                                                  torch.ones(4096, 1, dtype=torch.bfloat16), (4096, 1))
    with torch.no_grad():
        again.copy_(w)
    opt.step()
    opt2.step()
    assert torch.equal(w, again)
