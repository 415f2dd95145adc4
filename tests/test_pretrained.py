"""The models that ship with recur: they load by name, solve fresh puzzles of their kind about as well as
docs/benchmarks.md says, carry no machine paths, and `recur solve` / `recur report --demo` pick them up."""

import json

import numpy as np
import pytest

import recur
from conftest import assert_one_line_error
from recur import pretrained
from recur.checkpoint import read_model
from recur.cli import main
from recur.tasks.sudoku import from_tokens, generate, is_valid_solution

# Exact accuracy measured on 1,000 fresh puzzles of the training kind (docs/benchmarks.md, shipped models),
# less a margin for the 100-puzzle sample drawn here.
FLOOR = {"sudoku6": 0.94, "sudoku9": 0.96}  # measured: 0.990 (sudoku6, minimal), 0.997 (sudoku9, 34 clues)


def as_text(puzzle: np.ndarray) -> str:
    return "".join(str(d) if d else "." for d in puzzle)


def solved(model, puzzles: np.ndarray, pred) -> np.ndarray:
    """Per puzzle: whether the prediction is a valid solution of it."""
    size = model.cfg.data.sudoku.size
    return np.array([is_valid_solution(p, from_tokens(a), size) for p, a in zip(puzzles, pred.tokens.numpy())])


def fresh(name: str, count: int, seed: int = 2026) -> tuple:
    """The shipped model and `count` new puzzles made by the generator settings in its own header."""
    model = recur.load(name)
    s = model.cfg.data.sudoku
    puzzles, _, _ = generate(s.size, count, seed, s.givens, s.min_rating, s.max_rating)
    return model, puzzles


@pytest.mark.parametrize("name", sorted(pretrained.REGISTRY))
def test_a_shipped_model_solves_fresh_puzzles_of_its_kind(name):
    model, puzzles = fresh(name, 100)
    _, pred = model.solve([as_text(p) for p in puzzles], halt="none")
    rate = solved(model, puzzles, pred).mean()
    assert rate >= FLOOR[name], f"{name} solved {rate:.3f} of 100 fresh puzzles"


@pytest.mark.parametrize("name", sorted(pretrained.REGISTRY))
def test_adaptive_halting_at_the_shipped_threshold_keeps_the_accuracy_in_fewer_steps(name):
    """The header's eval.halt_threshold (4) is the default of solve: adaptive halting then solves what all steps
    solve, less a puzzle or two, in well under half the steps (at threshold 0 it lost ~8 points)."""
    model, puzzles = fresh(name, 100, seed=7)
    assert model.cfg.eval.halt_threshold == 4.0
    texts = [as_text(p) for p in puzzles]
    _, full = model.solve(texts, halt="none")
    _, adaptive = model.solve(texts)
    assert solved(model, puzzles, adaptive).sum() >= solved(model, puzzles, full).sum() - 2
    assert adaptive.steps.float().mean() < model.n_sup / 2
    _, eager = model.solve(texts, threshold=0.0)  # the trained decision halts earlier still
    assert eager.steps.float().mean() <= adaptive.steps.float().mean()


def test_shipped_files_are_small_and_name_no_machine_paths():
    files = [pretrained.path(name) for name in pretrained.REGISTRY]
    assert sum(f.stat().st_size for f in files) < 10e6
    for f in files:
        _, meta = read_model(f)
        assert set(meta) <= {"preset", "task", "config", "dataset", "step", "info"}, f.name  # no training state
        strings = [v for v in _values(meta) if isinstance(v, str)]
        assert not [v for v in strings if v.startswith(("/", "~")) or ":\\" in v], f.name


def _values(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _values(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _values(v)
    else:
        yield tree


def test_solve_without_a_model_picks_the_shipped_one_of_the_puzzles_size(tmp_path, capsys):
    _, puzzles = fresh("sudoku9", 2, seed=7)
    assert main(["solve", as_text(puzzles[0])]) == 0
    out = capsys.readouterr().out
    assert "the shipped model sudoku9" in out and "answer after" in out
    listed = tmp_path / "two.txt"
    listed.write_text("# 6x6 puzzles\n" + "\n".join(as_text(p) for p in fresh("sudoku6", 2)[1]) + "\n")
    assert main(["solve", str(listed)]) == 0
    assert "the shipped model sudoku6" in capsys.readouterr().out
    assert main(["solve", "." * 25]) == 2
    assert_one_line_error(capsys, 2, "no shipped model solves puzzles of 25 cells", "--model")


def test_report_demo_shows_a_shipped_model_thinking(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--demo", "sudoku6", "--sample", "4", "--examples", "32"]) == 0
    out = capsys.readouterr().out
    assert "4 of 32 measured test puzzles traced" in out
    page = (tmp_path / "sudoku6-demo.html").read_text()
    assert "recur-data" in page
    assert main(["report", "--demo", "sudoku6", "runs/x"]) == 2
    assert_one_line_error(capsys, 2, "--demo reports a shipped model")


def test_export_writes_the_same_model_without_training_state_or_paths(micro_run, tmp_path, capsys):
    out = tmp_path / "shared" / "model.safetensors"
    assert main(["export", str(micro_run), str(out)]) == 0
    assert "step_" in capsys.readouterr().out  # names the checkpoint it read
    header = json.dumps(read_model(out)[1])
    assert str(micro_run.parent) not in header
    puzzles, _, _ = generate(4, 16, seed=3)
    texts = [as_text(p) for p in puzzles]
    a, b = recur.load(micro_run).solve(texts)[1], recur.load(out).solve(texts)[1]
    assert a.tokens.equal(b.tokens) and a.steps.equal(b.steps)
    before = out.read_bytes()
    assert main(["export", str(micro_run), str(out)]) == 2  # never replaces a file unasked
    assert_one_line_error(capsys, 2, f"{out} exists", "--force")
    assert out.read_bytes() == before
    assert main(["export", str(micro_run), str(out), "--force"]) == 0
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "x.safetensors")]) == 2
    assert_one_line_error(capsys, 2, "does not exist")
