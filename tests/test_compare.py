"""The comparison runner end to end on a micro budget."""

import json

import pytest

from recur.cli import main
from recur.compare import list_comparisons, load_spec
from recur.config import load_config
from recur.errors import RecurError

SPEC = '''
description = "micro comparison"
base = "micro"
shared = ["train.steps=4", "train.eval_every=2", "train.ckpt_every=0", "eval.show=0"]
seeds = [0, 1]
reference = "hrm"
[arms]
trm = []
hrm = ["model.separate_nets=true", "model.grad=one_step", "recursion.act=q_learning", "optim.ema=false"]
transformer = ["model.arch=transformer", "model.layers=3"]
'''


def test_compare_trains_every_arm_and_writes_a_table(tmp_path, capsys):
    spec = tmp_path / "micro.toml"
    spec.write_text(SPEC)
    assert main(["compare", str(spec), f"data.dir={tmp_path / 'data'}", "--out", str(tmp_path)]) == 0
    root = next(tmp_path.glob("compare-micro-*"))
    results = json.loads((root / "results.json").read_text())
    assert list(results["arms"]) == ["trm", "hrm", "transformer"]
    assert all(len(rows) == 2 for rows in results["arms"].values())  # two seeds each
    trm, hrm, tf = (results["arms"][k][0] for k in ("trm", "hrm", "transformer"))
    assert trm["net_calls_eval"] == 4 * 2 * 3  # N_sup * T * (n+1)
    assert tf["net_calls_eval"] == 4 and tf["layer_passes_eval"] == 12
    assert hrm["params"] > trm["params"]  # a second net
    assert len(trm["exact_per_step"]) == 4
    assert len(trm["evals"]) == 2 and 0 <= trm["dead_fraction"] <= 1 and 0 < trm["enough_net_calls"] <= 24
    table = (root / "table.md").read_text()
    assert "train s to hrm's" in table and "dead steps" in table
    assert table.count("\n| ") == 4 and "| trm |" in table and "| transformer |" in table
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [
        "hrm-s0", "hrm-s1", "transformer-s0", "transformer-s1", "trm-s0", "trm-s1"]
    assert "results:" in capsys.readouterr().out


def test_shipped_comparisons_load_and_their_arms_are_valid():
    for name in list_comparisons():
        spec = load_spec(name)
        for sets in spec["arms"].values():
            load_config(spec["base"], spec["shared"] + sets)


def test_bad_comparison_specs(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('base = "micro"\nbudget = 3\n[arms]\na = []\n')
    with pytest.raises(RecurError, match="unknown keys budget"):
        load_spec(str(bad))
    bad.write_text('base = "micro"\n[arms]\na = "model.T=2"\n')
    with pytest.raises(RecurError, match="list of key=value"):
        load_spec(str(bad))
    with pytest.raises(RecurError, match="unknown comparison"):
        load_spec("nosuch")
    bad.write_text('base = "micro"\nreference = "b"\n[arms]\na = []\n')
    with pytest.raises(RecurError, match="reference 'b' is not one of its arms"):
        load_spec(str(bad))
