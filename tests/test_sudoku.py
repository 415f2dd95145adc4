"""Sudoku task: solver, generator, augmentation, parsing, CSV I/O, dataset splits and the Task."""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recur.tasks.sudoku import SudokuData
from recur.errors import RecurError
from recur.tasks import sudoku as sd

EASY = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
EASY_SOLUTION = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"
HARD = "8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4.."


def digits(text: str) -> np.ndarray:
    return np.array([0 if ch == "." else int(ch) for ch in text], np.uint8)


@cache
def sample(size: int, count: int = 4, seed: int = 11) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return sd.generate(size, count, seed, workers=1)


def csv_text(puzzles: np.ndarray, solutions: np.ndarray, ratings: list[str]) -> str:
    rows = [sd.CSV_HEADER]
    for i, (p, s, r) in enumerate(zip(puzzles, solutions, ratings)):
        blank = "." if i % 2 else "0"  # both blank spellings occur in the wild
        q = "".join(str(d) if d else blank for d in p.tolist())
        rows.append(f"gen{i},{q},{''.join(map(str, s.tolist()))},{r}")
    return "\n".join(rows) + "\n"


# --- solver ---------------------------------------------------------------------------------------


def test_solver_finds_the_unique_solution():
    count, solution, _ = sd.solve(digits(EASY), 9)
    assert count == 1
    assert "".join(map(str, solution.tolist())) == EASY_SOLUTION
    assert sd.rating(digits(EASY), 9) == 0  # singles alone solve it


def test_solver_rates_a_hard_puzzle_and_is_deterministic():
    count, solution, _ = sd.solve(digits(HARD), 9)
    assert count == 1 and sd.is_valid_solution(digits(HARD), solution, 9)
    assert sd.rating(digits(HARD), 9) == sd.rating(digits(HARD), 9) > 5


def test_solver_counts_several_solutions_up_to_the_limit():
    assert sd.solve(np.zeros(16, np.uint8), 4)[0] == 2
    assert sd.solve(np.zeros(16, np.uint8), 4, limit=300)[0] == 288  # all 4x4 grids
    sparse = digits(EASY)
    sparse[:27] = 0
    count, first, guesses = sd.solve(sparse, 9)
    assert count == 2 and guesses > 0 and sd.is_valid_solution(sparse, first, 9)


def test_solver_reports_no_solution_for_contradictions():
    twice_in_row = np.zeros(16, np.uint8)
    twice_in_row[[0, 2]] = 1
    assert sd.solve(twice_in_row, 4) == (0, None, 0)
    # No repeated digit, but cell (1, 1) has no candidate: row 1 holds 1, 2, 3 and column 1 holds 4.
    no_candidate = digits("." + "123" + "...." + "4..." + "....")
    count, solution, _ = sd.solve(no_candidate, 4)
    assert count == 0 and solution is None


def test_solve_rejects_malformed_grids():
    with pytest.raises(RecurError, match="has 81 cells, got 80"):
        sd.solve(np.zeros(80, np.uint8), 9)
    with pytest.raises(RecurError, match="got 7"):
        sd.solve(np.full(16, 7, np.uint8), 4)


# --- generation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [4, 6, 9])
def test_generated_puzzles_are_unique_minimal_and_distinct(size):
    puzzles, solutions, ratings = sample(size)
    cells = size * size
    assert puzzles.shape == solutions.shape == (4, cells) and puzzles.dtype == np.uint8
    assert len({p.tobytes() for p in puzzles}) == 4
    for p, s, r in zip(puzzles, solutions, ratings):
        count, found, _ = sd.solve(p, size)
        assert count == 1 and np.array_equal(found, s)
        assert sd.is_valid_solution(p, s, size)
        assert r == sd.rating(p, size)
        for cell in np.flatnonzero(p)[:12]:  # minimal: every clue is needed
            weaker = p.copy()
            weaker[cell] = 0
            assert sd.solve(weaker, size)[0] == 2


@pytest.mark.parametrize(("size", "givens"), [(4, 6), (6, 14), (9, 30)])
def test_generate_keeps_the_requested_number_of_givens(size, givens):
    puzzles, _, _ = sd.generate(size, 3, 5, givens=givens)
    assert ((puzzles > 0).sum(1) == givens).all()
    assert all(sd.solve(p, size)[0] == 1 for p in puzzles)


def test_generate_respects_rating_filters():
    _, _, hard = sd.generate(9, 4, 2, min_rating=3)
    _, _, easy = sd.generate(9, 4, 2, max_rating=0)
    assert (hard >= 3).all() and (easy == 0).all()
    with pytest.raises(RecurError, match="min_rating=1000000"):
        sd.generate(4, 2, 0, min_rating=10**6)
    with pytest.raises(RecurError, match="givens=17"):
        sd.generate(9, 1, 0, givens=17)  # random clue removal almost never reaches 17


def test_generate_never_returns_excluded_puzzles():
    first, _, _ = sd.generate(4, 30, 3)
    banned = {p.tobytes() for p in first[:10]}
    again, _, _ = sd.generate(4, 30, 3, exclude=banned)
    produced = {p.tobytes() for p in again}
    assert len(produced) == 30 and not produced & banned


def test_generate_is_deterministic_and_ignores_the_worker_count():
    one = sd.generate(4, 40, 9, workers=1)
    two = sd.generate(4, 40, 9, workers=2)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(one, two))
    other = sd.generate(4, 40, 10, workers=1)
    assert one[0].tobytes() != other[0].tobytes()


# --- augmentation ---------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(size=st.sampled_from([4, 6, 9]), which=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_augment_keeps_a_unique_valid_puzzle(size, which, seed):
    puzzles, solutions, _ = sample(size)
    p, s = sd.augment(puzzles[which], solutions[which], size, np.random.default_rng(seed))
    assert p.dtype == s.dtype == np.uint8
    assert sd.is_valid_solution(p, s, size)
    count, found, _ = sd.solve(p, size)
    assert count == 1 and np.array_equal(found, s)
    assert (p > 0).sum() == (puzzles[which] > 0).sum()
    # Digits are relabelled, so the sorted counts of each given digit survive.
    old = np.sort(np.bincount(puzzles[which], minlength=size + 1)[1:])
    assert np.array_equal(np.sort(np.bincount(p, minlength=size + 1)[1:]), old)


@pytest.mark.parametrize(("size", "transposes"), [(4, True), (6, False), (9, True)])
def test_augment_transposes_only_square_boxes(size, transposes):
    row_only = np.zeros(size * size, np.uint8)
    row_only[:size] = np.arange(1, size + 1)  # givens in one row: stay in a row unless transposed
    rng = np.random.default_rng(0)
    in_column = 0
    for _ in range(64):
        p, _ = sd.augment(row_only, row_only, size, rng)
        grid = p.reshape(size, size) > 0
        in_row = grid.all(1).any()
        in_column += grid.all(0).any()
        assert in_row or grid.all(0).any()
    assert (in_column > 0) == transposes


def test_augment_6x6_solutions_stay_legal():
    _, solutions, _ = sample(6)
    many = np.repeat(solutions, 100, 0)
    _, out = sd._augment_many(many, many, 6, np.random.default_rng(1))
    assert all(sd.is_valid_solution(s, s, 6) for s in out)


# --- text -----------------------------------------------------------------------------------------


def test_parse_puzzle_accepts_pretty_grids_and_both_blanks():
    pretty = "1 . | 3 4\n3 4 | . 2\n----+----\n. 1 | . 3\n4 3 | 2 .\n"
    expected = [1, 0, 3, 4, 3, 4, 0, 2, 0, 1, 0, 3, 4, 3, 2, 0]
    assert sd.parse_puzzle(pretty).tolist() == expected
    assert sd.parse_puzzle("1034340201034320", 4).tolist() == expected
    assert sd.render(np.array(expected), 4) == pretty.rstrip("\n")


@pytest.mark.parametrize(
    ("text", "size", "message"),
    [
        (EASY[:-1], 9, "has 80 cells, expected 81"),
        ("1" * 20, None, "has 20 cells, expected 16, 36 or 81"),
        (EASY[:10] + "x" + EASY[11:], 9, "bad character 'x' at position 11"),
        ("5" + "." * 15, None, "digit 5 at row 1, column 1 is larger than the grid size 4"),
        ("1.1." + "." * 12, 4, "digit 1 repeats in row 1"),
        ("2..." + "...." + "2..." + "....", 4, "digit 2 repeats in column 1"),
        ("3..." + ".3.." + "...." + "....", 4, "digit 3 repeats in box 1"),
    ],
)
def test_parse_puzzle_errors_name_the_problem(text, size, message):
    with pytest.raises(RecurError, match=message) as error:
        sd.parse_puzzle(text, size)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("size", [6, 9])
def test_render_shows_every_given(size):
    puzzle = sample(size)[0][0]
    text = sd.render(puzzle, size)
    assert sum(ch.isdigit() for ch in text) == (puzzle > 0).sum()
    assert np.array_equal(sd.parse_puzzle(text, size), puzzle)


def test_tokens_follow_the_reference_layout():
    grid = np.array([0, 1, 5, 9], np.uint8)
    assert sd.to_tokens(grid).tolist() == [1, 2, 6, 10]
    assert sd.from_tokens(np.array([0, 1, 2, 10])).tolist() == [0, 0, 1, 9]
    assert np.array_equal(sd.from_tokens(sd.to_tokens(grid)), grid)


# --- CSV ------------------------------------------------------------------------------------------


def test_read_csv_round_trip(tmp_path):
    puzzles, solutions, _ = sample(9)
    path = tmp_path / "puzzles.csv"
    path.write_text(csv_text(puzzles, solutions, ["3", "", "0", "12"]))
    q, a, ratings = sd.read_csv(path)
    assert np.array_equal(q, puzzles) and np.array_equal(a, solutions)
    assert ratings.dtype == np.int32 and ratings.tolist() == [3, -1, 0, 12]
    with pytest.raises(RecurError, match="q has 81 cells, expected 16"):
        sd.read_csv(path, size=4)


def edit_q(row: str, change) -> str:
    """The CSV row with its q column replaced by change(q)."""
    source, q, rest = row.split(",", 2)
    return ",".join([source, change(q), rest])


def swap_given(q: str) -> str:
    """q with its first given changed to another digit (q and a then disagree)."""
    cell = next(i for i, ch in enumerate(q) if ch not in ".0")
    return q[:cell] + str(int(q[cell]) % 9 + 1) + q[cell + 1 :]


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda row: edit_q(row, lambda q: q + "1"), "q has 82 cells, expected 81"),
        (lambda row: row + ",7", "has 5 columns, expected 4"),
        (lambda row: edit_q(row, lambda q: q[:4] + "?" + q[5:]), r"q has bad character '\?' at position 5"),
        (lambda row: row.rsplit(",", 2)[0] + "," + "1" * 81 + ",0", "a is not a legal solution: digit 1 rep"),
        (lambda row: edit_q(row, swap_given), "a disagrees with q at row"),
        (lambda row: row[:-1] + "x", "rating 'x' is not an integer"),
    ],
)
def test_read_csv_errors_name_file_and_line(tmp_path, corrupt, message):
    puzzles, solutions, _ = sample(9)
    lines = csv_text(puzzles, solutions, ["1"] * 4).splitlines()
    lines[3] = corrupt(lines[3])
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecurError, match=message) as error:
        sd.read_csv(path)
    assert "bad.csv line 4:" in str(error.value) and "\n" not in str(error.value)


def test_read_csv_rejects_bad_headers_and_missing_files(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("id,puzzle\n")
    with pytest.raises(RecurError, match="line 1: header"):
        sd.read_csv(path)
    with pytest.raises(RecurError, match="nope.csv"):
        sd.read_csv(tmp_path / "nope.csv")


# --- dataset and task -----------------------------------------------------------------------------


def small_cfg(**changes) -> SudokuData:
    return replace(SudokuData(size=4, train_size=6, test_size=5, augmentations=3), **changes)


def test_build_splits_layout():
    splits, info = sd.build_splits(small_cfg(), seed=1)
    assert info == {"vocab_size": 6, "seq_len": 16, "num_puzzle_ids": 1, "size": 4}
    train, test = splits["train"], splits["test"]
    assert train["inputs"].shape == train["labels"].shape == (24, 16)
    assert test["inputs"].shape == (5, 16)
    for split, group in ((train, 4), (test, 1)):
        n = len(split["inputs"])
        assert split["inputs"].dtype == split["labels"].dtype == np.uint8
        assert split["inputs"].min() >= 1 and split["inputs"].max() <= 5
        assert split["labels"].min() >= 2 and split["labels"].max() <= 5
        assert split["puzzle_ids"].dtype == np.int32 and not split["puzzle_ids"].any()
        assert split["puzzle_index"].tolist() == list(range(n + 1))
        assert split["group_index"].tolist() == list(range(0, n + 1, group))
        assert split["ratings"].dtype == np.int32 and split["ratings"].shape == (n,)
        assert all(sd.Sudoku().verify(x, y, info) for x, y in zip(split["inputs"], split["labels"]))
    base = {row.tobytes() for row in train["inputs"][::4]}
    assert len(base) == 6 and not base & {row.tobytes() for row in test["inputs"]}
    # Group members are shuffles of their base: same number of givens.
    givens = (train["inputs"] > 1).sum(1).reshape(6, 4)
    assert (givens == givens[:, :1]).all()


def test_build_splits_is_deterministic():
    a, _ = sd.build_splits(small_cfg(size=9, train_size=2, test_size=2, augmentations=2), seed=3)
    b, _ = sd.build_splits(small_cfg(size=9, train_size=2, test_size=2, augmentations=2), seed=3)
    c, _ = sd.build_splits(small_cfg(size=9, train_size=2, test_size=2, augmentations=2), seed=4)
    for split in ("train", "test"):
        assert all(a[split][k].tobytes() == b[split][k].tobytes() for k in a[split])
    assert a["train"]["inputs"].tobytes() != c["train"]["inputs"].tobytes()


def test_build_splits_from_csv(tmp_path):
    puzzles, solutions, _ = sd.generate(6, 7, 4)
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text(csv_text(puzzles[:5], solutions[:5], ["1"] * 5))
    test.write_text(csv_text(puzzles[5:], solutions[5:], [""] * 2))
    cfg = small_cfg(size=6, train_size=3, test_size=0, augmentations=2)
    cfg = replace(cfg, train_csv=str(train), test_csv=str(test))
    splits, _ = sd.build_splits(cfg, seed=0)
    bases = sd.from_tokens(splits["train"]["inputs"][::3])
    assert len(bases) == 3 and all(any(np.array_equal(b, p) for p in puzzles[:5]) for b in bases)
    assert np.array_equal(sd.from_tokens(splits["test"]["inputs"]), puzzles[5:])
    assert splits["test"]["ratings"].tolist() == [-1, -1]
    with pytest.raises(RecurError, match="train_csv and test_csv"):
        sd.build_splits(small_cfg(train_csv=str(train)), seed=0)


def test_task_parse_read_render_verify(tmp_path):
    task = sd.Sudoku()
    info = {"size": 9, "vocab_size": 11, "seq_len": 81, "num_puzzle_ids": 1}
    assert len(task.build(small_cfg(train_size=2, test_size=1, augmentations=1), seed=0)[0]["train"]["inputs"]) == 4
    tokens = task.parse(EASY, info)
    assert tokens.dtype == np.uint8 and tokens.tolist() == sd.to_tokens(digits(EASY)).tolist()
    answer = sd.to_tokens(digits(EASY_SOLUTION))
    assert task.verify(tokens, answer, info)
    broken = answer.copy()
    broken[[2, 3]] = broken[[3, 2]]  # two blanks swapped: still the givens, no longer legal
    assert not task.verify(tokens, broken, info)
    assert task.render(tokens, info) == sd.render(digits(EASY), 9)

    plain = tmp_path / "mine.txt"
    plain.write_text(f"# my puzzles\n\n{EASY}\n  {HARD}  \n")
    assert [t for _, t in task.read_puzzles(plain, info)] == [EASY, HARD]
    listed = tmp_path / "mine.csv"
    listed.write_text(f"{sd.CSV_HEADER}\na,{EASY},{EASY_SOLUTION},0\n")
    assert [t for _, t in task.read_puzzles(listed, info)] == [EASY]
    with pytest.raises(RecurError, match="missing.txt"):
        task.read_puzzles(tmp_path / "missing.txt", info)
