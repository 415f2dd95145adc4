"""ARC grids, augmentations and their tables."""

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recur.tasks.arc import augment
from recur.tasks.arc.grids import EOS, PAD, crop, crop_shapes, encode, grid_text, parse_grid
from recur.tasks.common import dihedral

from arc_helpers import random_task


@st.composite
def grids(draw):
    h, w = draw(st.integers(1, 30)), draw(st.integers(1, 30))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).integers(0, 10, (h, w)).astype(np.uint8)


@settings(max_examples=120, deadline=None)
@given(grids(), st.integers(0, 7), st.permutations(list(range(1, 10))))
def test_augmentation_then_inverse_is_identity(grid, d, perm):
    colours = np.array([0] + perm, np.uint8)
    out = augment.apply(grid, d, colours)
    assert out.shape == (grid.shape[::-1] if augment.SWAPS_SIDES[d] else grid.shape)
    assert np.array_equal(augment.invert(out, d, colours), grid)
    assert (out == 0).sum() == (grid == 0).sum()  # black stays black


def test_source_cells_follow_the_shared_dihedral():
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (2, 5), (7, 3), (30, 30)]:
        g = rng.integers(0, 10, (h, w))
        for d in range(8):
            want = dihedral(g, d)
            H, W = want.shape
            i, j = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
            r, c = augment.source_cells(np.array(d), i, j, np.array(h), np.array(w))
            assert np.array_equal(g[r, c], want), (h, w, d)


def test_crop_recovers_every_size():
    shapes = [(h, w) for h in range(1, 31) for w in range(1, 31)]
    rng = np.random.default_rng(1)
    grids_ = [rng.integers(0, 10, s).astype(np.uint8) for s in shapes]
    tokens = np.stack([encode(g) for g in grids_])
    assert crop_shapes(tokens).tolist() == [list(s) for s in shapes]
    assert all(np.array_equal(a, b) for a, b in zip(crop(tokens), grids_))
    small = encode(np.ones((3, 4), np.uint8), side=10)
    assert crop(small, 10)[0].shape == (3, 4)


def test_eos_marks_the_row_below_and_the_column_right_not_the_corner():
    t = encode(np.full((2, 3), 5, np.uint8), side=5, offset=(1, 1)).reshape(5, 5)
    assert (t[1:3, 1:4] == 7).all()
    assert (t[3, 1:4] == EOS).all() and (t[1:3, 4] == EOS).all()
    assert t[3, 4] == PAD and t[0].tolist() == [PAD] * 5
    full = encode(np.zeros((30, 30), np.uint8)).reshape(30, 30)
    assert (full == 2).all()  # a full-canvas grid has no room for EOS marks


def _reference_crop(tokens, side):
    """The reference evaluator's loop, written out: the largest top-left rectangle of colour tokens."""
    grid = tokens.reshape(side, side)
    best, size, width = 0, (0, 0), side
    for rows in range(1, side + 1):
        for c in range(width):
            if not 2 <= grid[rows - 1, c] <= 11:
                width = c
                break
        if rows * width > best:
            best, size = rows * width, (rows, width)
    return size


def test_crop_matches_the_reference_rule_on_noisy_predictions():
    rng = np.random.default_rng(2)
    # mostly colours, with some PAD/EOS sprinkled in: ragged "rectangles" of every kind
    tokens = np.where(rng.random((400, 100)) < 0.08, rng.integers(0, 2, (400, 100)), rng.integers(2, 12, (400, 100)))
    assert crop_shapes(tokens, 10).tolist() == [list(_reference_crop(t, 10)) for t in tokens]
    assert crop(np.zeros(900, np.uint8))[0].shape == (0, 0)


def test_grid_text_round_trip_and_errors():
    g = np.array([[0, 1, 2], [3, 4, 5]], np.uint8)
    assert np.array_equal(parse_grid(grid_text(g)), g)
    assert np.array_equal(parse_grid("[[0, 1, 2], [3, 4, 5]]".replace("], [", "]\n[")), g)
    for text, problem in [("12\n3", "different lengths"), ("1a", "bad character"), ("", "empty"),
                          ("\n".join(["1" * 31] * 2), "larger than 30x30")]:
        with pytest.raises(ValueError, match=problem):
            parse_grid(text)


def _digest(task_pairs, d, colours):
    """SHA-256 of an augmented task, pair order ignored (the reference builder's puzzle hash)."""
    parts = []
    for x, y in task_pairs:
        ax, ay = augment.apply(x, d, colours), augment.apply(y, d, colours)
        parts.append(hashlib.sha256(bytes(ax.shape) + ax.tobytes() + b"|" + bytes(ay.shape) + ay.tobytes()).hexdigest())
    return "|".join(sorted(parts))


def test_table_is_deduplicated_exactly():
    rng = np.random.default_rng(3)
    sym = np.array([[1, 0, 1], [0, 2, 0], [1, 0, 1]], np.uint8)  # invariant under every symmetry
    symmetric = [(sym, sym), (sym, sym.copy())]  # the same pair twice: order and repeats ignored
    for pairs in (symmetric, random_task(rng, "r", demos=2, max_side=3).train):
        d, colours = augment.table(pairs, 300, seed=0, task_id="t")
        digests = [_digest(pairs, d[i], colours[i]) for i in range(len(d))]
        assert len(set(digests)) == len(d)  # every kept augmentation makes another task...
        cd, cc = augment.candidates(augment.RETRIES * 300, 0, "t")
        tried = {_digest(pairs, cd[i], cc[i]) for i in range(len(cd))}
        assert tried | {digests[0]} == set(digests) or len(d) == 301  # ...and none that was tried is missing
    assert len(augment.table(symmetric, 300, 0, "t")[0]) == 9 * 8  # 2 colours used: 9 * 8 colour maps, 1 shape
    d, colours = augment.table(symmetric, 300, 0, "t")
    assert d[0] == 0 and colours[0].tolist() == list(range(10)) and (colours[:, 0] == 0).all()


def test_table_depends_on_seed_and_task_id_only():
    pairs = random_task(np.random.default_rng(4), "x", demos=3).train
    a = augment.table(pairs, 50, seed=7, task_id="abc")
    b = augment.table(pairs, 50, seed=7, task_id="abc")
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[1], augment.table(pairs, 50, seed=8, task_id="abc")[1])
    assert not np.array_equal(a[1], augment.table(pairs, 50, seed=7, task_id="abd")[1])
    fewer = augment.table(pairs, 20, seed=7, task_id="abc")  # a smaller K keeps a prefix of the larger table
    assert np.array_equal(fewer[1], a[1][:21]) and len(a[0]) == 51
    assert len(augment.table(pairs, 0, 7, "abc")[0]) == 1
