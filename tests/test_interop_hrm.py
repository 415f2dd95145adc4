"""Converting reference HRM checkpoints (sapientinc/HRM and the TRM repository's copy) into recur ones.

The fixture (tests/fixtures/hrm_reference, see its README) holds tiny reference HRMs and what the
reference code computed with them, in evaluation and in training; a converted model (recur's TRM with
separate_nets, grad=one_step and Q-learning halting) must reproduce it step by step.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import assert_one_line_error, load_exactly
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

import recur
from recur.api import Recur
from recur.checkpoint import MODEL_FILE
from recur.cli import main
from recur.config import ModelConfig
from recur.errors import RecurError
from recur.interop import convert, map_keys, strip_prefixes
from recur.models import build_model
from recur.config import RunConfig, TrainConfig
from recur.supervision import Carry, DeepSupervision, continue_target, halt_decision, halt_score

FIXTURE = Path(__file__).parent / "fixtures" / "hrm_reference"
STEPS = 3
# variant: (state-dict file, key prefix in it, prefix tokens the reference uses)
VARIANTS = {
    "hrm_rope": ("step_10", "_orig_mod.model.", 1),  # sapientinc/HRM, RoPE, 2+2 layers
    "trm_repo_learned": ("step_20", "", 2),  # the TRM repo's hrm.py, learned positions, 1+1 layers
}
TOL = dict(atol=1e-5, rtol=1e-4)


def src(variant: str) -> Path:
    return FIXTURE / variant / VARIANTS[variant][0]


def expected(variant: str) -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / variant / "expected.safetensors"))


def arch(variant: str) -> dict:
    return yaml.safe_load((FIXTURE / variant / "all_config.yaml").read_text())["arch"]


def load_converted(variant: str, out: Path) -> Recur:
    written, notes = convert("hrm-reference", src(variant), out, [], seq_len=81)
    assert written == out / MODEL_FILE and written.is_file()
    assert notes == []  # the yaml told everything
    return recur.load(out, device="cpu")


def batch(exp):
    return exp["inputs"].long(), exp["puzzle_identifiers"].long()


# --- parity with the reference ------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_converted_hrm_reproduces_reference(variant, tmp_path):
    keys = torch.load(src(variant), weights_only=True).keys()
    assert all(k.startswith(VARIANTS[variant][1] + "inner.") for k in keys)  # as the reference saved it
    model = load_converted(variant, tmp_path / "out")
    exp = expected(variant)
    inputs, ids = batch(exp)
    assert exp["logits"].shape == (STEPS, 4, 81, 11)
    state = model.module.init_state(4)
    with torch.no_grad():
        for s in range(STEPS):
            state, out = model.module(state, inputs, ids)
            for name in ("logits", "q_halt", "q_continue"):
                torch.testing.assert_close(getattr(out, name), exp[name][s], **TOL,
                                           msg=lambda m: f"step {s + 1} {name}: {m}")
    # the recursion really moves the answer between steps, and the Q-head is not degenerate
    assert (exp["logits"][0].argmax(-1) != exp["logits"][-1].argmax(-1)).any()
    assert exp["q_halt"].std() > 0.1 and exp["q_continue"].std() > 0.1

    pred = model.predict(inputs, ids, steps=STEPS)
    assert torch.equal(pred.tokens, exp["logits"][-1].argmax(-1))
    assert (pred.steps == STEPS).all()
    # HRM halts when q_halt > q_continue: recur's halting score is their difference
    torch.testing.assert_close(pred.halt_score, exp["q_halt"] - exp["q_continue"], **TOL)
    score = exp["q_halt"] - exp["q_continue"]
    assert (score > 0).any() and (score < 0).any()  # the sign matters somewhere


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_yaml_settings_reach_the_config(variant, tmp_path):
    model = load_converted(variant, tmp_path / "out")
    a = arch(variant)
    m, r = model.cfg.model, model.cfg.recursion
    assert m.arch == "trm" and m.separate_nets and m.grad == "one_step" and not m.single_z
    assert r.act == "q_learning"
    assert (m.hidden, m.heads, m.layers, m.T, m.n, m.puzzle_emb_dim) == (
        a["hidden_size"], a["num_heads"], a["L_layers"], a["H_cycles"], a["L_cycles"], a["puzzle_emb_ndim"])
    assert a["H_layers"] == a["L_layers"]
    assert m.prefix_len == VARIANTS[variant][2] == math.ceil(a["puzzle_emb_ndim"] / a["hidden_size"])
    assert m.pos == a["pos_encodings"] and m.mixer == "attention"
    assert (r.n_sup, r.exploration, r.loss) == (a["halt_max_steps"], a["halt_exploration_prob"], "stablemax")
    assert model.cfg.optim.ema is False  # HRM trains without an EMA of the weights
    assert model.n_sup == 3  # predict() runs the reference's halt_max_steps by default
    assert model.info == {"vocab_size": 11, "seq_len": 81, "size": 9,
                          "num_puzzle_ids": {"hrm_rope": 3, "trm_repo_learned": 1}[variant]}
    assert model.task.name == "sudoku"
    assert len(model.module.net.layers) == len(model.module.net_y.layers) == a["L_layers"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_q_learning_target_matches_reference(variant, tmp_path):
    """The reference's training step (train mode, exploration off) from the initial carry: one supervision
    step, then `target_q_continue` from an extra forward on the new state, at steps=1 of n_sup=3."""
    model = load_converted(variant, tmp_path / "out")
    exp = expected(variant)
    inputs, ids = batch(exp)
    module = model.module.train()
    with torch.no_grad():
        state, out = module(module.init_state(4), inputs, ids)
    torch.testing.assert_close(out.q_halt, exp["train_q_halt"][0], **TOL)
    torch.testing.assert_close(out.q_continue, exp["train_q_continue"][0], **TOL)
    steps = torch.ones(4, dtype=torch.int32)
    target = continue_target(module, state, inputs, ids, steps, 3)
    torch.testing.assert_close(target, exp["target_q_continue"][0], **TOL)
    # the target is not something trivially close: it is not the step's own continue probability
    assert (target - torch.sigmoid(out.q_continue)).abs().max() > 1e-2


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_training_steps_match_reference(variant, tmp_path):
    """Three reference training steps with the same batch offered each time: rows that halt (q_halt >
    q_continue, or the last step) restart from the initial state. recur's pieces, step by step."""
    model = load_converted(variant, tmp_path / "out")
    exp = expected(variant)
    inputs, ids = batch(exp)
    ref_steps, ref_halted = exp["train_steps"], exp["train_halted"].bool()
    # the fixture covers early halts, restarts and the last-step branch of the target
    assert ref_halted[:-1].any() and not ref_halted[0].all() and (ref_steps == 3).any()
    module = model.module.train()
    state = module.init_state(4)
    steps = torch.zeros(4, dtype=torch.int32)
    halted = torch.ones(4, dtype=torch.bool)
    with torch.no_grad():
        for s in range(STEPS):
            state = module.reset_state(state, halted)
            steps = torch.where(halted, 0, steps)
            state, out = module(state, inputs, ids)
            steps = steps + 1
            target = continue_target(module, state, inputs, ids, steps, 3)
            halted = halt_decision(steps, halt_score(out, "q_learning"), 3)
            msg = lambda m: f"step {s + 1}: {m}"  # noqa: E731
            torch.testing.assert_close(out.q_halt, exp["train_q_halt"][s], **TOL, msg=msg)
            torch.testing.assert_close(out.q_continue, exp["train_q_continue"][s], **TOL, msg=msg)
            torch.testing.assert_close(target, exp["target_q_continue"][s], **TOL, msg=msg)
            assert torch.equal(steps, ref_steps[s]), s
            assert torch.equal(halted, ref_halted[s]), s


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_engine_deep_supervision_matches_reference(variant, tmp_path):
    """recur's DeepSupervision (streaming, exploration off) takes the reference's halting decisions and
    trains q_continue towards the reference's target."""
    model = load_converted(variant, tmp_path / "out")
    exp = expected(variant)
    inputs, ids = batch(exp)
    data = {"inputs": inputs, "labels": exp["labels"].long(), "puzzle_ids": ids}
    module = model.module.train()
    ds = DeepSupervision(RunConfig(recursion=replace(model.cfg.recursion, exploration=0.0),
                                   train=TrainConfig(batch_size=4)))
    carry = Carry.empty(module, data["inputs"], data["labels"])
    for s in range(STEPS):
        assert ds.needs_batch(carry)
        carry, loss, _ = ds.advance(module, carry, data)
        assert torch.equal(carry.steps, exp["train_steps"][s]), s
        assert torch.equal(carry.halted, exp["train_halted"][s].bool()), s
        want = F.binary_cross_entropy_with_logits(exp["train_q_continue"][s], exp["target_q_continue"][s],
                                                  reduction="sum")
        torch.testing.assert_close(loss.cont, want, **TOL, msg=lambda m: f"step {s + 1}: {m}")
        assert loss.cont > 0


def test_without_yaml_flags_tell_the_arch(tmp_path):
    """Without all_config.yaml the weights tell depth, width, positions and prefix; cycles, heads and
    N_sup come from flags, and with the right ones the model computes what the reference did."""
    (tmp_path / "run").mkdir()
    shutil.copy(src("hrm_rope"), tmp_path / "run" / "step_10")
    flags = ["model.heads=4", "model.T=2", "model.n=2", "recursion.n_sup=3"]
    _, notes = convert("hrm-reference", tmp_path / "run" / "step_10", tmp_path / "out", flags, seq_len=81)
    assert len(notes) == 1 and "no all_config.yaml" in notes[0]
    model = recur.load(tmp_path / "out", device="cpu")
    m = model.cfg.model
    assert (m.hidden, m.layers, m.pos, m.prefix_len) == (32, 2, "rope", 1)
    assert m.separate_nets and m.grad == "one_step"
    assert model.cfg.recursion.act == "q_learning"
    exp = expected("hrm_rope")
    pred = model.predict(exp["inputs"], exp["puzzle_identifiers"])
    torch.testing.assert_close(pred.logits, exp["logits"][-1], **TOL)
    torch.testing.assert_close(pred.halt_score, exp["q_halt"] - exp["q_continue"], **TOL)


def test_puzzle_embedding_wider_than_one_token(tmp_path):
    """HRM spreads puzzle_emb_ndim over ceil(ndim/hidden) prefix tokens, zero-padding the last one."""
    sd = hrm_layout(layers=1, puzzle_dim=48, learned_pos=True, num_ids=2)
    cfg = yaml.safe_load((FIXTURE / "trm_repo_learned" / "all_config.yaml").read_text())
    cfg["arch"]["puzzle_emb_ndim"] = 48
    convert("hrm-reference", run_dir(tmp_path, sd, cfg=cfg), tmp_path / "out", seq_len=81)
    model = recur.load(tmp_path / "out", device="cpu")
    assert (model.cfg.model.prefix_len, model.cfg.model.puzzle_emb_dim) == (2, 48)
    x = model.module.embed_input(torch.full((2, 81), 3), torch.tensor([0, 1]))
    rows = sd["inner.puzzle_emb.weights"]
    pos = sd["inner.embed_pos.embedding_weight"]
    prefix = torch.cat((rows, torch.zeros(2, 16)), dim=1).view(2, 2, D)  # F.pad(puzzle_emb, (0, 16)) in HRM
    torch.testing.assert_close(x[:, :2], math.sqrt(D) * 0.707106781 * (prefix + pos[:2]))


# --- the command line ---------------------------------------------------------------------------


def cli_convert(kind: str, path: Path, dst: Path, *extra: str) -> int:
    return main(["convert", "--from", kind, str(path), str(dst), "--seq-len", "81", *extra])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cli_convert_hrm(variant, tmp_path, capsys):
    dst = tmp_path / "converted"
    assert cli_convert("hrm-reference", src(variant), dst) == 0
    assert str(dst / MODEL_FILE) in capsys.readouterr().out
    assert sorted(p.name for p in dst.iterdir()) == [MODEL_FILE]
    exp = expected(variant)
    pred = recur.load(dst, device="cpu").predict(exp["inputs"], exp["puzzle_identifiers"], steps=STEPS)
    assert torch.equal(pred.tokens, exp["logits"][-1].argmax(-1))
    torch.testing.assert_close(pred.halt_score, exp["q_halt"] - exp["q_continue"], **TOL)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cli_hrm_is_not_a_trm(variant, tmp_path, capsys):
    rc = cli_convert("trm-reference", src(variant), tmp_path / "out")
    assert_one_line_error(capsys, rc, "not a reference TRM", "H_level")
    assert not (tmp_path / "out").exists()


def run_dir(tmp_path: Path, sd: dict, variant: str = "hrm_rope", cfg: dict | None = None) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    torch.save(sd, run / "step_1")
    if cfg is None:
        shutil.copy(FIXTURE / variant / "all_config.yaml", run)
    else:
        (run / "all_config.yaml").write_text(yaml.safe_dump(cfg))
    return run / "step_1"


@pytest.mark.parametrize("level", ["H_level", "L_level"])
def test_cli_modules_of_different_depths(level, tmp_path, capsys):
    sd = torch.load(src("hrm_rope"), weights_only=True)
    sd = {k: v for k, v in sd.items() if f"{level}.layers.1." not in k}
    rc = cli_convert("hrm-reference", run_dir(tmp_path, sd), tmp_path / "out")
    line = assert_one_line_error(capsys, rc, "H and L modules")
    assert ("1 and 2" if level == "H_level" else "2 and 1") in line
    assert not (tmp_path / "out").exists()


def test_cli_hrm_without_h_level(tmp_path, capsys):
    """A TRM-like state dict (L_level only) is not an HRM: the error names the missing module."""
    sd = {k: v for k, v in torch.load(src("hrm_rope"), weights_only=True).items() if ".H_level." not in k}
    rc = cli_convert("hrm-reference", run_dir(tmp_path, sd), tmp_path / "out")
    assert_one_line_error(capsys, rc, "not a reference HRM", "inner.H_level.layers")
    assert not (tmp_path / "out").exists()


def test_cli_hrm_weights_with_a_trm_config(tmp_path, capsys):
    cfg = yaml.safe_load((FIXTURE / "hrm_rope" / "all_config.yaml").read_text())
    cfg["arch"]["name"] = "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"
    sd = torch.load(src("hrm_rope"), weights_only=True)
    rc = cli_convert("hrm-reference", run_dir(tmp_path, sd, cfg=cfg), tmp_path / "out")
    assert_one_line_error(capsys, rc, cfg["arch"]["name"], "not a HRM", "trm-reference")
    assert not (tmp_path / "out").exists()


# --- key mapping --------------------------------------------------------------------------------

D, V, L = 32, 11, 81


def hrm_layout(layers: int, puzzle_dim: int, learned_pos: bool, num_ids: int) -> dict[str, torch.Tensor]:
    """Every key (with its shape) a reference HRM saves, keys starting at `inner.`."""
    prefix = -(puzzle_dim // -D)
    sd = {"inner.H_init": torch.randn(D), "inner.L_init": torch.randn(D),
          "inner.embed_tokens.embedding_weight": torch.randn(V, D), "inner.lm_head.weight": torch.randn(V, D),
          "inner.q_head.weight": torch.randn(2, D), "inner.q_head.bias": torch.randn(2)}
    if puzzle_dim:
        sd["inner.puzzle_emb.weights"] = torch.randn(num_ids, puzzle_dim)
    if learned_pos:
        sd["inner.embed_pos.embedding_weight"] = torch.randn(L + prefix, D)
    for level in ("H_level", "L_level"):
        for i in range(layers):
            p = f"inner.{level}.layers.{i}."
            sd[p + "self_attn.qkv_proj.weight"] = torch.randn(3 * D, D)
            sd[p + "self_attn.o_proj.weight"] = torch.randn(D, D)
            sd[p + "mlp.gate_up_proj.weight"] = torch.randn(512, D)
            sd[p + "mlp.down_proj.weight"] = torch.randn(D, 256)
    return sd


LAYOUTS = {  # (layout, recur model settings, key prefix)
    "rope": (dict(layers=2, puzzle_dim=32, learned_pos=False, num_ids=3),
             dict(pos="rope", heads=4, prefix_len=1), "_orig_mod.model."),
    "learned": (dict(layers=2, puzzle_dim=64, learned_pos=True, num_ids=2),
                dict(pos="learned", heads=2, prefix_len=2), "model."),
    "no_puzzle_emb": (dict(layers=3, puzzle_dim=0, learned_pos=False, num_ids=1),
                      dict(pos="rope", heads=4, prefix_len=0), ""),
}
LAYER_NAMES = {"self_attn.qkv_proj.weight": "attn.qkv.weight", "self_attn.o_proj.weight": "attn.out.weight",
               "mlp.gate_up_proj.weight": "mlp.gate_up.weight", "mlp.down_proj.weight": "mlp.down.weight"}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_hrm_key_maps(layout):
    shape, settings, prefix = LAYOUTS[layout]
    inner = hrm_layout(**shape)
    stripped = strip_prefixes({prefix + k: v for k, v in inner.items()})
    assert stripped.keys() == inner.keys()
    mapped = map_keys(stripped, "hrm-reference")
    assert len(mapped) == len(inner)  # nothing dropped, nothing merged

    cfg = replace(ModelConfig(), hidden=D, layers=shape["layers"], puzzle_emb_dim=shape["puzzle_dim"],
                  separate_nets=True, grad="one_step", **settings)
    model = build_model(cfg, {"vocab_size": V, "seq_len": L, "num_puzzle_ids": shape["num_ids"]})
    load_exactly(model, mapped)

    assert torch.equal(model.embed, inner["inner.embed_tokens.embedding_weight"])
    assert torch.equal(model.head.weight, inner["inner.lm_head.weight"])
    assert torch.equal(model.q_head.weight, inner["inner.q_head.weight"])
    assert torch.equal(model.q_head.bias, inner["inner.q_head.bias"])
    assert torch.equal(model.y_init, inner["inner.H_init"])  # H is the answer (y) module
    assert torch.equal(model.z_init, inner["inner.L_init"])  # L is the latent (z) module
    if shape["puzzle_dim"]:
        assert torch.equal(model.puzzle_emb, inner["inner.puzzle_emb.weights"])
    if shape["learned_pos"]:
        assert torch.equal(model.pos_emb, inner["inner.embed_pos.embedding_weight"])
    for level, net in (("L_level", model.net), ("H_level", model.net_y)):
        assert len(net.layers) == shape["layers"]
        for i, block in enumerate(net.layers):
            for ref, mine in LAYER_NAMES.items():
                want = inner[f"inner.{level}.layers.{i}.{ref}"]
                assert torch.equal(block.get_parameter(mine), want), (level, i, ref)


@pytest.mark.parametrize("extra", ["inner.H_level.layers.0.self_attn.rotary_emb.cos_cached",
                                   "inner.H_level.layers.0.mlp.gate_proj.weight",
                                   "inner.M_level.layers.0.mlp.down_proj.weight",
                                   "inner.H_level.norm.weight", "inner.rotary_emb.cos_cached"])
def test_unknown_hrm_key_is_an_error(extra):
    sd = hrm_layout(layers=1, puzzle_dim=32, learned_pos=False, num_ids=1)
    map_keys(sd, "hrm-reference")  # fine as is
    sd[extra] = torch.zeros(1)
    with pytest.raises(RecurError, match="not a reference HRM state dict: unexpected keys") as e:
        map_keys(sd, "hrm-reference")
    assert extra in str(e.value)


def test_hrm_without_yaml_takes_the_hrm_reference_cycle_defaults(tmp_path):
    """No all_config.yaml: T=2, n=2 are HRM's own defaults (not TRM's 3 and 6)."""
    shutil.copy(FIXTURE / "hrm_rope" / "step_10", tmp_path / "step_10")
    out, notes = convert("hrm-reference", tmp_path / "step_10", tmp_path / "out",
                                 ["model.heads=4", "recursion.n_sup=3"], seq_len=81)
    model = recur.load(out, device="cpu")
    assert (model.cfg.model.T, model.cfg.model.n) == (2, 2)
    assert notes and "model.prefix_len" not in notes[0]
    exp = load_file(str(FIXTURE / "hrm_rope" / "expected.safetensors"))
    state = model.module.init_state(4)
    with torch.no_grad():
        _, out0 = model.module(state, exp["inputs"].long(), exp["puzzle_identifiers"].long())
    torch.testing.assert_close(out0.logits, exp["logits"][0], atol=1e-5, rtol=1e-4)
