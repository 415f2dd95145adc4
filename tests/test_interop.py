"""Converting reference TRM checkpoints (SamsungSAILMontreal/TinyRecursiveModels) into recur ones.

The fixture (tests/fixtures/trm_reference, see its README) holds tiny reference models and what the
reference code computed with them; a converted model must reproduce it step by step.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from conftest import assert_one_line_error, load_exactly
import yaml
from safetensors.torch import load_file

import recur
from recur.checkpoint import MODEL_FILE
from recur.cli import main
from recur.errors import RecurError
from recur.interop import convert as interop_convert
from recur.interop import map_keys, strip_prefixes


def convert_trm_reference(src, dst, overrides=(), seq_len=None, task="sudoku"):
    return interop_convert("trm-reference", src, dst, overrides, seq_len=seq_len, task=task)


def map_trm_keys(sd):
    return map_keys(sd, "trm-reference")

FIXTURE = Path(__file__).parent / "fixtures" / "trm_reference"
STEPS = 3
# variant: (state-dict file, overrides the converter needs, seq_len to pass)
VARIANTS = {
    "attn_rope": ("step_10", [], 81),  # yaml tells the arch; its data_paths are not here
    "mlp_t": ("step_20", [], None),  # the token-mixing SwiGLU's width tells the length
    # no yaml: what the weights cannot tell comes from flags
    "learned_pos": ("step_30", ["model.heads=2", "model.T=1", "model.n=2", "model.prefix_len=2"], 81),
}
# float32 kernels differ in summation order between CPUs (AMD AVX-512, Intel AMX: up to 4e-5 on the logits after
# three recursive steps); the argmax must still match exactly (below)
TOL = dict(atol=1e-4, rtol=1e-4)


def src(variant: str) -> Path:
    return FIXTURE / variant / VARIANTS[variant][0]


def expected(variant: str) -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / variant / "expected.safetensors"))


def convert(variant: str, out: Path) -> Path:
    _, overrides, seq_len = VARIANTS[variant]
    return convert_trm_reference(src(variant), out, overrides, seq_len=seq_len, task="sudoku")[0]


def run_steps(model, inputs, ids, steps=STEPS):
    state = model.module.init_state(inputs.shape[0])
    outs = []
    with torch.no_grad():
        for _ in range(steps):
            state, out = model.module(state, inputs, ids)
            outs.append(out)
    return outs


# --- parity with the reference ------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_converted_model_reproduces_reference(variant, tmp_path):
    written = convert(variant, tmp_path / "out")
    assert written == tmp_path / "out" / MODEL_FILE and written.is_file()
    model = recur.load(tmp_path / "out", device="cpu")
    exp = expected(variant)
    inputs, ids = exp["inputs"].long(), exp["puzzle_identifiers"].long()
    assert exp["logits"].shape == (STEPS, 4, 81, 11)
    outs = run_steps(model, inputs, ids)
    for s, out in enumerate(outs):
        for name in ("logits", "q_halt", "q_continue"):
            got, want = getattr(out, name), exp[name][s]
            torch.testing.assert_close(got, want, **TOL, msg=lambda m: f"step {s + 1} {name}: {m}")
    # the recursion really moves the answer between steps, so the per-step comparison means something
    assert (exp["logits"][0].argmax(-1) != exp["logits"][-1].argmax(-1)).any()

    pred = model.predict(inputs, ids, steps=STEPS)
    assert torch.equal(pred.tokens, exp["logits"][-1].argmax(-1))
    assert (pred.steps == STEPS).all()
    torch.testing.assert_close(pred.halt_score, exp["q_halt"], **TOL)  # TRM halting score = q_halt


@pytest.mark.parametrize("variant", ["attn_rope", "mlp_t"])
def test_yaml_settings_reach_the_config(variant, tmp_path):
    convert(variant, tmp_path / "out")
    model = recur.load(tmp_path / "out", device="cpu")
    arch = yaml.safe_load((FIXTURE / variant / "all_config.yaml").read_text())["arch"]
    m, r = model.cfg.model, model.cfg.recursion
    assert (m.hidden, m.layers, m.T, m.n, m.prefix_len, m.puzzle_emb_dim) == (
        arch["hidden_size"], arch["L_layers"], arch["H_cycles"], arch["L_cycles"], arch["puzzle_emb_len"],
        arch["puzzle_emb_ndim"])
    assert m.mixer == ("mlp_t" if arch["mlp_t"] else "attention")
    assert (r.n_sup, r.exploration, r.loss) == (3, 0.1, "stablemax")
    assert model.n_sup == 3  # predict() runs the reference's halt_max_steps by default
    assert model.info["seq_len"] == 81 and model.info["vocab_size"] == 11 and model.task.name == "sudoku"


def test_seq_len_from_the_runs_dataset(tmp_path):
    """Without --seq-len the length comes from `<data_path>/test/dataset.json` next to the checkpoint."""
    run = tmp_path / "run"
    run.mkdir()
    for f in ("step_10", "all_config.yaml"):
        shutil.copy(FIXTURE / "attn_rope" / f, run / f)
    with pytest.raises(RecurError, match="--seq-len"):
        convert_trm_reference(run / "step_10", tmp_path / "a", seq_len=None)
    assert not (tmp_path / "a").exists()
    meta = run / "data" / "sudoku-extreme-1k-aug-1000" / "test" / "dataset.json"
    meta.parent.mkdir(parents=True)
    meta.write_text('{"seq_len": 81, "vocab_size": 11}')
    convert_trm_reference(run / "step_10", tmp_path / "b", seq_len=None)
    assert recur.load(tmp_path / "b", device="cpu").info["seq_len"] == 81


def test_bfloat16_initial_states_are_widened(tmp_path):
    """A bfloat16 reference run keeps H_init/L_init in bfloat16; recur stores float32 copies of them."""
    sd = torch.load(src("attn_rope"), weights_only=True)
    for k in ("H_init", "L_init"):
        sd[f"_orig_mod.model.inner.{k}"] = sd[f"_orig_mod.model.inner.{k}"].bfloat16()
    (tmp_path / "run").mkdir()
    torch.save(sd, tmp_path / "run" / "step_1")
    shutil.copy(FIXTURE / "attn_rope" / "all_config.yaml", tmp_path / "run")
    convert_trm_reference(tmp_path / "run" / "step_1", tmp_path / "out", seq_len=81)
    module = recur.load(tmp_path / "out", device="cpu").module
    for mine, ref in (("y_init", "H_init"), ("z_init", "L_init")):
        buf = getattr(module, mine)
        assert buf.dtype == torch.float32
        assert torch.equal(buf, sd[f"_orig_mod.model.inner.{ref}"].float())


def test_settings_the_weights_cannot_tell_matter(tmp_path):
    """Without its yaml, learned_pos converts with recur's defaults for heads/T/n, which compute
    something else: the flags in VARIANTS are required, and the fixture is sensitive to them."""
    convert_trm_reference(src("learned_pos"), tmp_path / "out", ["model.prefix_len=2"], seq_len=81)
    model = recur.load(tmp_path / "out", device="cpu")
    assert (model.cfg.model.heads, model.cfg.model.T, model.cfg.model.n) == (8, 3, 6)
    exp = expected("learned_pos")
    out = run_steps(model, exp["inputs"].long(), exp["puzzle_identifiers"].long(), steps=1)[0]
    assert (out.logits - exp["logits"][0]).abs().max() > 1e-2


# --- the command line ---------------------------------------------------------------------------


def test_cli_convert_and_refuse_to_overwrite(tmp_path, capsys):
    dst = tmp_path / "converted"
    _, overrides, seq_len = VARIANTS["learned_pos"]
    argv = ["convert", "--from", "trm-reference", str(src("learned_pos")), str(dst), *overrides,
            "--seq-len", str(seq_len)]
    assert main(argv) == 0
    assert str(dst / MODEL_FILE) in capsys.readouterr().out
    written = dst / MODEL_FILE
    before, stat = written.read_bytes(), written.stat()
    assert sorted(p.name for p in dst.iterdir()) == [MODEL_FILE]

    assert_one_line_error(capsys, main(argv), str(dst), "already exists")
    assert written.read_bytes() == before and written.stat().st_mtime_ns == stat.st_mtime_ns
    assert sorted(p.name for p in dst.iterdir()) == [MODEL_FILE]

    exp = expected("learned_pos")
    pred = recur.load(dst, device="cpu").predict(exp["inputs"], exp["puzzle_identifiers"], steps=STEPS)
    assert torch.equal(pred.tokens, exp["logits"][-1].argmax(-1))


def cli_convert(path: Path, dst: Path, *extra: str) -> int:
    return main(["convert", "--from", "trm-reference", str(path), str(dst), *extra])


def test_cli_missing_source(tmp_path, capsys):
    rc = cli_convert(tmp_path / "step_5", tmp_path / "out", "--seq-len", "81")
    assert_one_line_error(capsys, rc, "step_5", "does not exist")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["step_5", "model.safetensors"])
def test_cli_corrupt_source(tmp_path, capsys, name):
    bad = tmp_path / name
    bad.write_bytes(bytes(range(256)) * 8 + os.urandom(512))
    rc = cli_convert(bad, tmp_path / "out", "--seq-len", "81")
    assert_one_line_error(capsys, rc, name)
    assert not (tmp_path / "out").exists()


def test_cli_not_a_state_dict(tmp_path, capsys):
    torch.save([torch.zeros(3)], tmp_path / "step_5")
    assert_one_line_error(capsys, cli_convert(tmp_path / "step_5", tmp_path / "out"), "state dict")


def test_cli_unexpected_keys(tmp_path, capsys):
    sd = torch.load(src("attn_rope"), weights_only=True)
    sd["_orig_mod.model.inner.H_level.layers.0.self_attn.qkv_proj.weight"] = torch.zeros(96, 32)
    torch.save(sd, tmp_path / "step_5")
    rc = cli_convert(tmp_path / "step_5", tmp_path / "out", "--seq-len", "81")
    assert_one_line_error(capsys, rc, "unexpected keys", "inner.H_level.layers.0.self_attn.qkv_proj.weight")
    assert not (tmp_path / "out").exists()


def test_cli_state_dict_without_layers(tmp_path, capsys):
    torch.save({"inner.embed_tokens.embedding_weight": torch.zeros(11, 32)}, tmp_path / "step_5")
    rc = cli_convert(tmp_path / "step_5", tmp_path / "out", "--seq-len", "81")
    assert_one_line_error(capsys, rc, "no inner.L_level.layers")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arch_name", ["hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1",
                                       "recursive_reasoning.hrm@HierarchicalReasoningModel_ACTV1"])
def test_cli_rejects_an_hrm_config(tmp_path, capsys, arch_name):
    shutil.copy(src("attn_rope"), tmp_path / "step_10")
    cfg = yaml.safe_load((FIXTURE / "attn_rope" / "all_config.yaml").read_text())
    cfg["arch"]["name"] = arch_name
    (tmp_path / "all_config.yaml").write_text(yaml.safe_dump(cfg))
    rc = cli_convert(tmp_path / "step_10", tmp_path / "out", "--seq-len", "81")
    assert_one_line_error(capsys, rc, arch_name, "not a TRM")
    assert not (tmp_path / "out").exists()


def test_q_continue_halting_maps_to_q_learning(tmp_path):
    shutil.copy(src("attn_rope"), tmp_path / "step_10")
    cfg = yaml.safe_load((FIXTURE / "attn_rope" / "all_config.yaml").read_text())
    cfg["arch"]["no_ACT_continue"] = False
    (tmp_path / "all_config.yaml").write_text(yaml.safe_dump(cfg))
    convert_trm_reference(tmp_path / "step_10", tmp_path / "out", seq_len=81)
    assert recur.load(tmp_path / "out", device="cpu").cfg.recursion.act == "q_learning"


# --- key mapping --------------------------------------------------------------------------------

D, V, L = 32, 11, 81


def reference_layout(prefix_len: int, puzzle_dim: int, layers: int, mlp_t: bool, learned_pos: bool,
                     num_ids: int) -> dict[str, torch.Tensor]:
    """Every key (with its shape) a reference TRM of this kind saves, keys starting at `inner.`."""
    S = L + prefix_len
    sd = {"inner.H_init": torch.randn(D), "inner.L_init": torch.randn(D),
          "inner.embed_tokens.embedding_weight": torch.randn(V, D), "inner.lm_head.weight": torch.randn(V, D),
          "inner.q_head.weight": torch.randn(2, D), "inner.q_head.bias": torch.randn(2),
          "inner.puzzle_emb.weights": torch.randn(num_ids, puzzle_dim)}
    if learned_pos:
        sd["inner.embed_pos.embedding_weight"] = torch.randn(S, D)
    for i in range(layers):
        p = f"inner.L_level.layers.{i}."
        if mlp_t:
            sd[p + "mlp_t.gate_up_proj.weight"] = torch.randn(512, S)
            sd[p + "mlp_t.down_proj.weight"] = torch.randn(S, 256)
        else:
            sd[p + "self_attn.qkv_proj.weight"] = torch.randn(3 * D, D)
            sd[p + "self_attn.o_proj.weight"] = torch.randn(D, D)
        sd[p + "mlp.gate_up_proj.weight"] = torch.randn(512, D)
        sd[p + "mlp.down_proj.weight"] = torch.randn(D, 256)
    return sd


KINDS = {  # the fixture's three variants, each with two layers
    "attn_rope": (dict(prefix_len=4, puzzle_dim=32, layers=2, mlp_t=False, learned_pos=False, num_ids=3),
                  dict(pos="rope", mixer="attention", heads=4), "_orig_mod.model."),
    "mlp_t": (dict(prefix_len=2, puzzle_dim=32, layers=2, mlp_t=True, learned_pos=False, num_ids=1),
              dict(pos="none", mixer="mlp_t"), "model."),
    "learned_pos": (dict(prefix_len=2, puzzle_dim=48, layers=2, mlp_t=False, learned_pos=True, num_ids=2),
                    dict(pos="learned", mixer="attention", heads=2), ""),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_reference_key_maps(kind):
    from dataclasses import replace

    from recur.config import ModelConfig
    from recur.models.trm import TRM

    shape, arch, prefix = KINDS[kind]
    inner = reference_layout(**shape)
    saved = {prefix + k: v for k, v in inner.items()}
    stripped = strip_prefixes(saved)
    assert stripped.keys() == inner.keys()
    mapped = map_trm_keys(stripped)
    assert len(mapped) == len(inner)  # nothing dropped, nothing merged

    cfg = replace(ModelConfig(), hidden=D, layers=shape["layers"], prefix_len=shape["prefix_len"],
                  puzzle_emb_dim=shape["puzzle_dim"], **arch)
    model = TRM(cfg, vocab_size=V, seq_len=L, num_puzzle_ids=shape["num_ids"])
    load_exactly(model, mapped)
    assert torch.equal(model.embed, inner["inner.embed_tokens.embedding_weight"])
    assert torch.equal(model.y_init, inner["inner.H_init"])
    assert torch.equal(model.z_init, inner["inner.L_init"])
    assert torch.equal(model.puzzle_emb, inner["inner.puzzle_emb.weights"])
    assert torch.equal(model.q_head.bias, inner["inner.q_head.bias"])
    layer = model.net.layers[1]
    ref = "inner.L_level.layers.1."
    if shape["mlp_t"]:
        assert torch.equal(layer.mix.down.weight, inner[ref + "mlp_t.down_proj.weight"])
    else:
        assert torch.equal(layer.attn.qkv.weight, inner[ref + "self_attn.qkv_proj.weight"])
        assert torch.equal(layer.attn.out.weight, inner[ref + "self_attn.o_proj.weight"])
    assert torch.equal(layer.mlp.gate_up.weight, inner[ref + "mlp.gate_up_proj.weight"])


@pytest.mark.parametrize("extra", ["inner.H_level.layers.0.mlp.down_proj.weight",
                                   "inner.L_level.layers.0.self_attn.rotary_emb.cos_cached",
                                   "inner.L_level.layers.0.mlp.gate_proj.weight",
                                   "inner.L1_init", "lm_head.weight", "inner.lm_head.bias"])
def test_unknown_key_is_an_error(extra):
    sd = reference_layout(prefix_len=4, puzzle_dim=32, layers=1, mlp_t=False, learned_pos=False, num_ids=1)
    map_trm_keys(sd)  # fine as is
    sd[extra] = torch.zeros(1)
    with pytest.raises(RecurError, match="unexpected keys") as e:
        map_trm_keys(sd)
    assert extra in str(e.value)


def test_strip_prefixes():
    t = torch.zeros(1)
    assert list(strip_prefixes({"_orig_mod.model.inner.H_init": t, "model.inner.L_init": t,
                                "inner.lm_head.weight": t, "_orig_mod.inner.q_head.bias": t})) == [
        "inner.H_init", "inner.L_init", "inner.lm_head.weight", "inner.q_head.bias"]
