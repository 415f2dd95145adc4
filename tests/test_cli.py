"""The command line end to end on the micro preset, and its answers to bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import recur
from recur.cli import main
from recur.data import Dataset
from recur.errors import RecurError
from recur.plots import have_matplotlib
from recur.tasks.sudoku import generate, render


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    code = main(["train", "micro", f"train.out_dir={root}", "train.run_name=run", f"data.dir={root / 'data'}"])
    assert code == 0
    return root


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("recur: error: "), err
    return err[0]


def test_train_writes_a_complete_run(trained, capsys):
    run = trained / "run"
    assert (run / "config.json").is_file() and (run / "summary.json").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [4, 8, 12]
    ev = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in ev] == [6, 12] and len(ev[-1]["exact_per_step"]) == 4
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000006", "step_0000012"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["net_calls_per_step"] == 6 and summary["step"] == 12


def test_compiled_training_and_inference_give_the_eager_numbers(trained, tmp_path):
    """train.compile=on (the default on a GPU) and load(compile=True) run the same math as eager."""
    assert main(["train", "micro", "train.compile=on", f"train.out_dir={tmp_path}", "train.run_name=c",
                 f"data.dir={trained / 'data'}"]) == 0
    logs = [[json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
            for root in (trained / "run", tmp_path / "c")]
    for eager, compiled in zip(*logs, strict=True):
        for key in ("loss", "lm_loss", "halt_loss", "accuracy", "token_accuracy", "exact_accuracy"):
            if key in eager:
                assert compiled[key] == pytest.approx(eager[key], rel=1e-4, abs=1e-6), (eager["step"], key)
    split = Dataset(trained / "data").splits["test"]
    inputs = split.batch(np.arange(len(split)))["inputs"]
    models = [recur.load(trained / "run", "cpu", compile=c) for c in (False, True)]
    assert hasattr(models[1].module, "_orig_mod")  # torch.compile's wrapper
    preds = [m.predict(inputs, halt="adaptive", stream=True, batch_size=8) for m in models]
    assert torch.allclose(preds[0].logits, preds[1].logits, atol=1e-4)
    assert torch.equal(preds[0].steps, preds[1].steps) and torch.equal(preds[0].tokens, preds[1].tokens)


def test_train_prints_results_puzzles_and_plot(tmp_path, capsys):
    assert main(["train", "micro", f"train.out_dir={tmp_path}", "train.run_name=r", f"data.dir={tmp_path / 'd'}"]) == 0
    out = capsys.readouterr().out
    assert "held-out exact accuracy" in out and "supervision step" in out
    assert "----+----" in out  # a rendered 4x4 grid
    assert "plot:" in out and "checkpoint:" in out


def test_eval_and_solve(trained, capsys, tmp_path):
    run = str(trained / "run")
    assert main(["eval", run, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["examples"] == 32 and 0 <= res["exact_accuracy"] <= 1 and len(res["exact_per_step"]) == 4
    assert main(["eval", run, "--halt", "adaptive", "--limit", "8"]) == 0
    assert "exact accuracy" in capsys.readouterr().out

    puzzles, _, _ = generate(4, 2, seed=99)
    text = "".join(str(d) if d else "." for d in puzzles[0])
    assert main(["solve", text, "--model", run]) == 0
    out = capsys.readouterr().out
    assert "answer after" in out and render(puzzles[0], 4).splitlines()[0] in out
    f = tmp_path / "puzzles.txt"
    f.write_text("# two puzzles\n" + "\n".join("".join(str(d) if d else "0" for d in p) for p in puzzles) + "\n")
    assert main(["solve", str(f), "--model", run, "--halt", "none"]) == 0
    assert capsys.readouterr().out.count("answer after 4 supervision steps") == 2


def test_profile_prints_a_table_and_a_verdict_and_writes_its_files(trained, capsys, tmp_path):
    assert main(["profile", str(trained / "run"), "--out", str(tmp_path / "prof"), "--limit", "16"]) == 0
    out = capsys.readouterr().out
    assert "| step | cycle | net calls |" in out and "net calls per example" in out
    res = json.loads((tmp_path / "prof" / "profile.json").read_text())
    assert res["examples"] == 16 and len(res["points"]) == 1 + 4 * 2  # the initial state + N_sup * T answer updates
    assert (tmp_path / "prof" / "plots" / "profile.png").is_file() == have_matplotlib()  # plots need the [plot] extra
    assert main(["eval", str(trained / "run"), "--guidance", "1.5", "--threshold", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["net_calls"] == 4 * 6
    assert main(["eval", str(trained / "run"), "--samples", "3", "--noise", "0.5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["net_calls"] == 3 * 4 * 6  # three trajectories per puzzle


def test_python_api(trained):
    import recur
    model = recur.load(trained / "run", device="cpu")
    puzzles, _, _ = generate(4, 3, seed=5)
    inputs = np.where(puzzles == 0, 1, puzzles + 1)
    pred = model.predict(inputs, steps=3, halt="none")
    assert pred.tokens.shape == (3, 16) and pred.logits.shape == (3, 16, 6)
    assert pred.per_step.shape == (3, 3, 16) and pred.steps.tolist() == [3, 3, 3]
    assert np.array_equal(pred.per_step[-1], pred.tokens)
    ada = model.predict(inputs, halt="adaptive")
    assert ada.steps.max() <= model.n_sup
    assert model.module.dtype == torch.float32  # the run's precision=auto on a CPU (tests pin float32)
    bf16 = recur.load(trained / "run", device="cpu", precision="bfloat16")
    assert bf16.module.dtype == torch.bfloat16
    agree = (bf16.predict(inputs, steps=3, halt="none").tokens == pred.tokens).float().mean()
    assert agree > 0.9  # the same answers up to bfloat16 rounding
    with pytest.raises(RecurError, match="precision must be one of auto, float32, bfloat16, got 'fp16'"):
        recur.load(trained / "run", device="cpu", precision="fp16")


def test_presets_prepare_keys(tmp_path, capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "quickstart" in out and "(default)" in out and "micro" in out
    assert main(["prepare", "micro", "--out", str(tmp_path / "ds")]) == 0
    assert (tmp_path / "ds" / "metadata.json").is_file()
    assert main(["keys"]) == 0
    assert "recursion.n_sup = 16" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["train", "micro", "model.hiden=3"], "did you mean 'model.hidden'"),
    (["train", "micro", "model.mixer=conv"], "one of attention|mlp_t"),
    (["train", "nosuchpreset"], "unknown preset"),
    (["eval", "/nonexistent/run"], "does not exist"),
    (["profile", "/nonexistent/run"], "does not exist"),
    (["eval", "{run}", "--samples", "0"], "--samples must be >= 1"),
    (["solve", "1234", "--model", "{run}"], "has 4 cells, expected 16"),
    (["solve", "12.4" * 3 + "x...", "--model", "{run}"], "character"),
    (["solve", "11.." + "." * 12, "--model", "{run}"], "repeats"),
    (["convert", "--from", "trm-reference", "/nonexistent.pt", "{tmp}/out"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(argv, needle, trained, tmp_path, capsys):
    argv = [a.format(run=trained / "run", tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    line = error_line(capsys)
    assert needle in line, line


def test_corrupt_checkpoint_and_mismatched_data(trained, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 20)
    assert main(["eval", str(bad)]) == 2
    assert "not a readable checkpoint" in error_line(capsys)
    assert main(["prepare", "micro", "data.sudoku.size=6", "--out", str(tmp_path / "six")]) == 0
    capsys.readouterr()
    assert main(["eval", str(trained / "run"), "--data", str(tmp_path / "six")]) == 2
    assert "vocab_size=8 but the model expects 6" in error_line(capsys)


def test_existing_run_is_never_overwritten(trained, capsys):
    run = trained / "run"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["train", "micro", f"train.out_dir={trained}", "train.run_name=run"]) == 2
    assert "already exists" in error_line(capsys)
    assert before == {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}


def test_unwritable_output_is_an_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", "micro", f"train.out_dir={blocker}", f"data.dir={tmp_path / 'd'}"]) == 2
    assert "cannot write the run directory" in error_line(capsys)


def test_console_script_entry_point():
    done = subprocess.run([sys.executable, "-m", "recur.cli", "train", "micro", "model.T=zero"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "recur: error: config key 'model.T' expects int, got 'zero'"
