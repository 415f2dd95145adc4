"""The language models through the trainer, the engine and the command line: lm-micro (a recurrent-depth model on
2-digit addition) and a vanilla transformer on a small text file."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from recur.checkpoint import read_model
from recur.cli import main
from recur.config import load_config
from recur.dist import Dist
from recur.lm_engine import LMEngine
from recur.runlog import read_metrics
from recur.train import Trainer, resumed_config

from conftest import assert_one_line_error


def micro(tmp_path, *extra):
    return load_config("lm-micro", [f"data.dir={tmp_path / 'data'}", "eval.show=0", "train.precision=float32",
                                    *extra])


def records(run, kind="train"):
    return [{k: v for k, v in r.items() if k not in ("steps_per_s", "elapsed_s")}
            for r in read_metrics(run) if r["kind"] == kind]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lm")
    Trainer(micro(tmp, "train.steps=40", "train.eval_every=20", "train.ckpt_every=20", "train.log_every=10",
                  "optim.lr=3e-3"), tmp / "run", say=lambda m: None).fit()
    return tmp, tmp / "run"


def test_a_recurrent_micro_run_learns_logs_its_depth_and_cost(baseline):
    _, run = baseline
    train = records(run)
    assert train[-1]["nll"] < 0.8 * train[0]["nll"]
    assert all(r["sampled_depth"] >= 1 for r in train) and "stat.depth" in train[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train_tokens"] > 0 and summary["train_flops_per_token"] > 0
    ev = records(run, "eval")[-1]
    assert 0 <= ev["exact_accuracy"] <= 1 and ev["mean_depth"] == 3  # model.lm.mean_depth at evaluation


def test_a_killed_run_resumes_exactly_with_the_same_depths_and_initial_states(baseline, tmp_path):
    tmp, run = baseline
    shutil.copytree(tmp / "data", tmp_path / "data")
    cfg = micro(tmp_path, "train.steps=20", "train.eval_every=20", "train.ckpt_every=20", "train.log_every=10",
                "optim.lr=3e-3")
    Trainer(cfg, tmp_path / "run", say=lambda m: None).fit()  # the first half, then a resume to 40 steps
    resumed = Trainer(resumed_config(tmp_path / "run", ["train.steps=40"]), tmp_path / "run", resume=True,
                      say=lambda m: None)
    resumed.fit()
    assert records(tmp_path / "run") == records(run)
    a, b = read_model(run)[0], read_model(tmp_path / "run")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_data_parallel_ranks_take_slices_of_one_draw(baseline):
    """R ranks of B/R rows draw the same depth and the same initial states as one process of B rows."""
    cfg = micro(baseline[0], "train.batch_size=8")
    one, r0, r1 = LMEngine(cfg), LMEngine(cfg, Dist(0, 2)), LMEngine(cfg, Dist(1, 2))
    for _ in range(3):
        d, s = one._depth_and_state(8, 5)
        (d0, s0), (d1, s1) = r0._depth_and_state(4, 5), r1._depth_and_state(4, 5)
        assert d == d0 == d1 and torch.equal(s, torch.cat([s0, s1]))


def test_generate_and_evaluate_at_depths_and_exits_from_the_command_line(baseline, capsys):
    _, run = baseline
    assert main(["eval", str(run), "--depth", "1,2,4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert [r["depth"] for r in rows] == [1, 2, 4] and [r["mean_depth"] for r in rows] == [1, 2, 4]
    assert main(["eval", str(run), "--depth", "8", "--exit", "kl", "--json"]) == 0
    adaptive = json.loads(capsys.readouterr().out)["results"][0]
    assert 1 <= adaptive["mean_depth"] <= 8  # never beyond the depth asked for
    assert main(["generate", str(run), "12+3=", "--max-new-tokens", "4", "--exit", "latent"]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith("12+3=") and "tokens/s" in cap.err and "mean depth" in cap.err
    assert main(["generate", str(run), "1" * 40]) == 2
    assert_one_line_error(capsys, 2, "context")
    assert main(["eval", str(run), "--depth", "x"]) == 2
    assert_one_line_error(capsys, 2, "--depth takes depths")


def test_a_transformer_lm_on_a_text_file(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    assert main(["train", "lm-cpu", f"data.text.source={corpus}", "data.text.context=16", "model.hidden=32",
                 "model.heads=2", "model.layers=4", "model.lm.sharing=middle_cycle", "model.lm.recursions=2",
                 "model.lm.router=expert", "train.steps=6", "train.batch_size=8", "train.eval_every=6",
                 "train.log_every=3", "train.progress=false", f"train.out_dir={tmp_path}", "train.run_name=r",
                 f"data.dir={tmp_path / 'd'}", "train.precision=float32", "eval.show=1"]) == 0
    out = capsys.readouterr().out
    assert "validation NLL" in out and "unique parameters" in out and "continued greedily" in out
    assert main(["generate", str(tmp_path / "r"), "the quick", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("the quick")
    assert main(["generate", str(tmp_path / "r"), "x", "--depth", "3"]) == 2
    assert_one_line_error(capsys, 2, "recurrent-depth models")
