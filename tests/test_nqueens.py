"""N-Queens task: solution enumeration, generation, symmetry, checking, text and dataset splits."""

from __future__ import annotations

from dataclasses import replace
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recur.tasks.nqueens import NQueensData
from recur.errors import RecurError
from recur.tasks import nqueens as nq

INFO8 = {"vocab_size": 3, "seq_len": 64, "num_puzzle_ids": 1, "size": 8}


def legal(board: np.ndarray, size: int) -> bool:
    """Independent check: size queens, no two on a row, column or diagonal, only 1/2 tokens."""
    b = np.asarray(board).reshape(size, size)
    if not np.isin(b, (1, 2)).all():
        return False
    queens = list(zip(*np.nonzero(b == 2)))
    pairs = combinations(queens, 2)
    return len(queens) == size and all(r1 != r2 and c1 != c2 and abs(r1 - r2) != abs(c1 - c2)
                                       for (r1, c1), (r2, c2) in pairs)


def board(queens: list[tuple[int, int]], size: int = 8) -> np.ndarray:
    b = np.ones(size * size, np.uint8)
    for r, c in queens:
        b[r * size + c] = 2
    return b


def inverse(k: int) -> int:
    """Quarter turns undo each other, reflections undo themselves."""
    assert nq.DIHEDRAL_INVERSE[k] == ((4 - k) % 4 if k < 4 else k)
    return nq.DIHEDRAL_INVERSE[k]


# --- solutions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, count", [(1, 1), (4, 2), (5, 10), (6, 4), (7, 40), (8, 92), (10, 724)])
def test_solution_counts_match_the_known_ones_and_are_legal_and_distinct(size, count):
    sols = nq.solutions(size)
    assert sols.shape == (count, size * size) and sols.dtype == np.uint8
    assert all(legal(s, size) for s in sols)
    assert len({s.tobytes() for s in sols}) == count


@pytest.mark.parametrize("size, match", [(2, "no solution"), (3, "no solution"), (0, "1..12"), (13, "1..12")])
def test_sizes_without_solutions_are_one_line_errors(size, match):
    with pytest.raises(RecurError, match=match) as err:
        nq.solutions(size)
    assert "\n" not in str(err.value)


# --- generation -----------------------------------------------------------------------------------


def test_generated_boards_are_cut_from_their_label_and_distinct():
    inputs, labels = nq.generate(8, 300, seed=3, min_given=1, max_given=7)
    assert inputs.shape == labels.shape == (300, 64) and inputs.dtype == labels.dtype == np.uint8
    assert all(legal(s, 8) for s in labels)
    assert np.isin(inputs, (1, 2)).all()
    assert np.all((inputs != 2) | (labels == 2))  # every given queen is in the label
    givens = (inputs == 2).sum(1)
    assert givens.min() == 1 and givens.max() == 7
    assert len({row.tobytes() for row in inputs}) == 300


def test_generation_is_deterministic_and_respects_exclude():
    a = nq.generate(6, 40, seed=5, min_given=1, max_given=3)
    b = nq.generate(6, 40, seed=5, min_given=1, max_given=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], nq.generate(6, 40, seed=6, min_given=1, max_given=3)[0])
    banned = {row.tobytes() for row in a[0]}
    c, _ = nq.generate(6, 40, seed=5, min_given=1, max_given=3, exclude=banned)
    assert not banned & {row.tobytes() for row in c}


def test_generation_fails_in_one_line_when_too_few_distinct_boards_exist():
    # 4x4: two solutions with disjoint queens, so exactly 8 one-queen boards
    inputs, _ = nq.generate(4, 8, seed=0, min_given=1, max_given=1)
    assert len({row.tobytes() for row in inputs}) == 8
    with pytest.raises(RecurError, match="found only 8 of 9 distinct boards") as err:
        nq.generate(4, 9, seed=0, min_given=1, max_given=1)
    assert "\n" not in str(err.value)
    with pytest.raises(RecurError, match="avoiding 8 excluded"):
        nq.generate(4, 1, seed=0, min_given=1, max_given=1, exclude={row.tobytes() for row in inputs})
    with pytest.raises(RecurError, match="min_given=3, max_given=2"):
        nq.generate(8, 1, seed=0, min_given=3, max_given=2)
    with pytest.raises(RecurError, match="max_given=9"):
        nq.generate(8, 1, seed=0, min_given=1, max_given=9)


# --- symmetry -------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(size=st.sampled_from([5, 6, 8]), k=st.integers(0, 7), pick=st.integers(0, 10_000))
def test_dihedral_maps_solutions_to_solutions_and_round_trips(size, k, pick):
    sols = nq.solutions(size)
    sol = sols[pick % len(sols)]
    image = nq.dihedral(sol, k)
    assert image.shape == sol.shape and legal(image, size)
    assert np.array_equal(nq.dihedral(image, inverse(k)), sol)
    cut = sol.copy()
    cut[np.flatnonzero(sol == 2)[::2]] = 1  # given queens travel with the board
    assert np.all((nq.dihedral(cut, k) != 2) | (image == 2))


def test_dihedral_gives_eight_distinct_images_and_works_on_batches():
    lone = board([(0, 1), (2, 5)])  # no symmetry: all 8 images differ
    images = [nq.dihedral(lone, k) for k in range(8)]
    assert np.array_equal(images[0], lone)
    assert len({im.tobytes() for im in images}) == 8
    assert np.array_equal(images[1].reshape(8, 8), np.rot90(lone.reshape(8, 8)))
    assert np.array_equal(images[4].reshape(8, 8), lone.reshape(8, 8).T)
    assert np.array_equal(images[5].reshape(8, 8), np.rot90(lone.reshape(8, 8).T))  # as recur.tasks.maze
    batch = nq.solutions(8)[:5]
    for k in range(8):
        assert np.array_equal(nq.dihedral(batch, k), np.stack([nq.dihedral(b, k) for b in batch]))


# --- checking -------------------------------------------------------------------------------------


def test_completions_and_valid_completions_on_hand_made_boards():
    sols = nq.solutions(8)
    assert nq.completions(np.ones(64, np.uint8), 8) == 92
    assert nq.completions(sols[0], 8) == 1
    corner = board([(0, 0)])
    assert nq.completions(corner, 8) == 4  # known: 4 solutions put a queen in a corner
    assert nq.completions(board([(0, 0), (1, 1)]), 8) == 0
    fits = [s for s in sols if s[0] == 2]
    assert len(fits) == 4 and not np.array_equal(fits[0], fits[1])
    assert nq.is_valid_completion(corner, fits[0], 8) and nq.is_valid_completion(corner, fits[1], 8)
    other = next(s for s in sols if s[0] != 2)
    assert legal(other, 8) and not nq.is_valid_completion(corner, other, 8)  # drops the given queen


def test_is_valid_completion_rejects_illegal_answers():
    sol = nq.solutions(8)[0]
    empty = np.ones(64, np.uint8)
    seven = sol.copy()
    seven[np.flatnonzero(sol == 2)[0]] = 1
    mirrored = sol.reshape(8, 8)[:, ::-1].copy().reshape(-1)  # a mirror image: also legal
    attacking = sol.copy()
    attacking[np.flatnonzero(sol == 2)[0]] = 1
    attacking[np.flatnonzero(sol == 2)[1] - 8] = 2  # directly above the row-1 queen: same column
    pad = sol.copy()
    pad[np.flatnonzero(sol == 1)[0]] = 0
    assert nq.is_valid_completion(empty, sol, 8) and nq.is_valid_completion(empty, mirrored, 8)
    for bad in (seven, attacking, pad, sol[:63], np.full(64, 2, np.uint8)):
        assert not nq.is_valid_completion(empty, bad, 8)


def test_score_counts_a_different_legal_completion_and_flags_ambiguity():
    sols = nq.solutions(8)
    corner = board([(0, 0)])
    fits = [s for s in sols if s[0] == 2]
    inputs = np.stack([corner, corner, sols[3]])
    labels = np.stack([fits[0], fits[0], sols[3]])
    other = next(s for s in sols if s[0] != 2)
    answers = np.stack([fits[1], other, sols[3]])
    scores = nq.NQueens().score(inputs, labels, answers, INFO8)
    assert set(scores) == {"valid_completion", "ambiguous"}
    assert scores["valid_completion"].tolist() == [1.0, 0.0, 1.0]
    assert scores["ambiguous"].tolist() == [1.0, 1.0, 0.0]
    assert scores["valid_completion"].dtype == np.float64


# --- text -----------------------------------------------------------------------------------------


def test_render_and_parse_round_trip():
    inputs, labels = nq.generate(8, 5, seed=1, min_given=1, max_given=7)
    for b in np.concatenate([inputs, labels]):
        text = nq.render(b, 8)
        assert len(text.splitlines()) == 8 and set(text) <= set("Q. \n")
        assert np.array_equal(nq.parse_board(text, 8), b)
    assert nq.render(board([(0, 1)], 4), 4).splitlines()[0] == ". Q . ."
    assert np.array_equal(nq.parse_board("0q00 0000 0000 0000", 4), board([(0, 1)], 4))
    assert np.array_equal(nq.parse_board("0100000000000000", 4), board([(0, 1)], 4))


@pytest.mark.parametrize("text, match", [
    ("." * 63, "has 63 cells, expected 64"),
    ("." * 63 + "x", "bad character 'x' at position 64"),
    ("Q" + "." * 8 + "Q" + "." * 54, "row 1, column 1 and row 2, column 2 attack each other"),
])
def test_parse_errors_are_one_line(text, match):
    with pytest.raises(RecurError, match=match) as err:
        nq.parse_board(text, 8)
    assert "\n" not in str(err.value)


def test_parse_names_column_and_diagonal_attacks():
    with pytest.raises(RecurError, match="row 1, column 2 and row 4, column 2"):
        nq.parse_board(nq.render(board([(0, 1), (3, 1)]), 8), 8)
    with pytest.raises(RecurError, match="row 3, column 3 and row 6, column 6"):
        nq.parse_board(nq.render(board([(2, 2), (5, 5)]), 8), 8)


def test_read_puzzles_takes_one_line_and_rendered_boards(tmp_path):
    one = board([(0, 0)])
    two = board([(1, 3), (4, 4)])
    path = tmp_path / "boards.txt"
    one_line = nq.render(one, 8).replace("\n", " ")
    path.write_text(f"# two boards\n{one_line}\n\n{nq.render(two, 8)}\n")
    task = nq.NQueens()
    found = task.read_puzzles(path, INFO8)
    assert [line for line, _ in found] == [2, 4]  # where each board starts
    texts = [text for _, text in found]
    assert np.array_equal(task.parse(texts[0], INFO8), one)
    assert np.array_equal(task.parse(texts[1], INFO8), two)
    path.write_text(nq.render(one, 8) + "\n. . .\n")
    with pytest.raises(RecurError, match="line 9 ends after 3 of 64 cells"):
        task.read_puzzles(path, INFO8)
    path.write_text(nq.render(one, 8)[:-2] + "\n. . .\n")
    with pytest.raises(RecurError, match="line 9: the board starting on line 1 has more than 64"):
        task.read_puzzles(path, INFO8)


# --- dataset --------------------------------------------------------------------------------------

CFG = NQueensData(size=8, train_size=60, test_size=40, min_given=1, max_given=7, dihedral=True)


def test_build_splits_groups_dihedral_images_and_keeps_test_apart():
    splits, info = nq.build_splits(CFG, seed=0)
    assert info == INFO8
    train, test = splits["train"], splits["test"]
    L = 64
    assert train["inputs"].shape == train["labels"].shape == (480, L)
    assert train["group_index"].tolist() == list(range(0, 481, 8))
    assert np.array_equal(train["puzzle_index"], np.arange(481)) and not train["puzzle_ids"].any()
    groups_in = train["inputs"].reshape(60, 8, L)
    groups_lab = train["labels"].reshape(60, 8, L)
    for k in range(8):
        assert np.array_equal(groups_in[:, k], nq.dihedral(groups_in[:, 0], k))
        assert np.array_equal(groups_lab[:, k], nq.dihedral(groups_lab[:, 0], k))
    for split in (train, test):
        assert all(nq.is_valid_completion(i, lab, 8) for i, lab in zip(split["inputs"], split["labels"]))
    assert test["inputs"].shape == (40, L) and test["group_index"].tolist() == list(range(41))
    train_images = {nq.dihedral(b, k).tobytes() for b in groups_in[:, 0] for k in range(8)}
    assert not train_images & {b.tobytes() for b in test["inputs"]}
    assert len({b.tobytes() for b in test["inputs"]}) == 40


def test_build_splits_is_deterministic_and_dihedral_can_be_off():
    a, _ = nq.build_splits(CFG, seed=4)
    b, _ = nq.NQueens().build(CFG, 4)
    for split in ("train", "test"):
        assert all(np.array_equal(a[split][key], b[split][key]) for key in a[split])
    plain, _ = nq.build_splits(replace(CFG, dihedral=False), seed=4)
    assert np.array_equal(plain["train"]["inputs"], a["train"]["inputs"][::8])
    assert plain["train"]["group_index"].tolist() == list(range(61))
    assert np.array_equal(plain["test"]["inputs"], a["test"]["inputs"])
    other, _ = nq.build_splits(CFG, seed=5)
    assert not np.array_equal(other["train"]["inputs"], a["train"]["inputs"])
    with pytest.raises(RecurError, match="train_size must be > 0"):
        nq.build_splits(replace(CFG, train_size=0), seed=0)
