"""ARC augmentations: a dihedral symmetry times a permutation of colours 1-9 (black stays black),
applied to every grid of a task, each with its inverse; and the per-task table of 1 + K distinct ones.

An augmentation is (d, colours): d in 0..7 indexes recur.tasks.common.dihedral, colours uint8 [10]
maps colour c to colours[c] with colours[0] = 0. Applying it recolours, then transforms (the two
commute); its inverse transforms back with DIHEDRAL_INVERSE[d], then maps colours back.

The table of a task (`table`) holds the identity first, then the first K candidates that make a task
different from every one kept before, as the reference builder keeps them: candidates are drawn
from a stream seeded by (seed, task id) alone, so candidate j is the same whatever else is in the
dataset; at most 5K are tried (the reference's retry factor). "Different" compares the whole task
(every demonstration and test pair, pair order ignored) through a 64-bit hash rather than the
reference's SHA-256; a hash collision could only drop a distinct candidate, never keep a duplicate.
"""

from __future__ import annotations

import numpy as np

from ..common import derive_seed, dihedral, dihedral_inverse

RETRIES = 5
"""Candidates tried per kept augmentation, at most (the reference's ARCAugmentRetriesFactor)."""

# Augmented cell (i, j) of a transformed h x w grid comes from the original's cell
#   (row, col) = (A_I*i + A_J*j + A_H*(h-1) + A_W*(w-1), B_I*i + B_J*j + B_H*(h-1) + B_W*(w-1))
# per symmetry d, in recur.tasks.common.dihedral's numbering (checked against it in the tests).
_ROW = np.array([(1, 0, 0, 0), (0, 1, 0, 0), (-1, 0, 1, 0), (0, -1, 1, 0),
                 (0, 1, 0, 0), (-1, 0, 1, 0), (0, -1, 1, 0), (1, 0, 0, 0)], np.int32)
_COL = np.array([(0, 1, 0, 0), (-1, 0, 0, 1), (0, -1, 0, 1), (1, 0, 0, 0),
                 (1, 0, 0, 0), (0, 1, 0, 0), (-1, 0, 0, 1), (0, -1, 0, 1)], np.int32)
SWAPS_SIDES = np.array([False, True, False, True, True, False, True, False])
"""Whether symmetry d turns an h x w grid into a w x h one."""


def source_cells(d: np.ndarray, i: np.ndarray, j: np.ndarray, h: np.ndarray, w: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """For cell (i, j) of the d-transformed version of an h x w grid, the original cell it shows (all
    arguments broadcast: symmetry ids, cell coordinates, original sides)."""
    a, b = _ROW[d], _COL[d]
    hm, wm = h - 1, w - 1
    row = a[..., 0] * i + a[..., 1] * j + a[..., 2] * hm + a[..., 3] * wm
    col = b[..., 0] * i + b[..., 1] * j + b[..., 2] * hm + b[..., 3] * wm
    return row, col


def apply(grid: np.ndarray, d: int, colours: np.ndarray) -> np.ndarray:
    """The augmented grid: recolour, then symmetry d."""
    return dihedral(np.asarray(colours, np.uint8)[grid], int(d))


def invert(grid: np.ndarray, d: int, colours: np.ndarray) -> np.ndarray:
    """Undo apply(., d, colours): inverse symmetry, then the inverse colour map."""
    return np.argsort(colours).astype(np.uint8)[dihedral_inverse(np.asarray(grid), int(d))]


def _weights(n: int, purpose: str) -> np.ndarray:
    """Fixed random 64-bit odd weights of the content hash (the same for every dataset)."""
    return np.random.default_rng(derive_seed(0, f"arc hash {purpose}")).integers(
        0, 2**63, n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


_CELL = {"input": _weights(900, "input cells"), "output": _weights(900, "output cells")}
_SHAPE = _weights(4, "shapes")
_ORDER = _weights(4096, "pair slots")


def _pair_terms(pairs: list[tuple[np.ndarray, np.ndarray | None]]) -> tuple[np.ndarray, np.ndarray]:
    """Per symmetry d, the hash of every pair as a linear function of the colour map:
    hash(pair under (d, colours)) = sum_c colours[c] * lin[d, c, pair] + const[d, pair] (mod 2^64),
    since a cell showing colour c contributes colours[c] times its position's weight.
    Returns lin uint64 [8, 10, pairs] and const uint64 [8, pairs]."""
    lin = np.zeros((8, 10, len(pairs)), np.uint64)
    const = np.zeros((8, len(pairs)), np.uint64)
    for d in range(8):
        for p, pair in enumerate(pairs):
            sides = []
            for grid, kind in zip(pair, ("input", "output")):
                if grid is None:  # a test input without its solution
                    sides += [0, 0]
                    continue
                cells = dihedral(grid, d).reshape(-1)
                sides += list(dihedral(grid, d).shape)
                onehot = (cells[None, :] == np.arange(10, dtype=np.uint8)[:, None]).astype(np.uint64)
                lin[d, :, p] += onehot @ _CELL[kind][:len(cells)]
            const[d, p] = np.array(sides, np.uint64) @ _SHAPE
    return lin, const


def task_hashes(pairs: list[tuple[np.ndarray, np.ndarray | None]], dihedrals: np.ndarray, colours: np.ndarray
                ) -> np.ndarray:
    """uint64 [n]: a hash of the whole task under each augmentation (dihedrals [n], colours [n, 10]),
    the same for augmentations that give the same pairs in any order."""
    lin, const = _pair_terms(pairs)
    per_pair = (colours.astype(np.uint64)[:, :, None] * lin[dihedrals]).sum(1, dtype=np.uint64)
    per_pair += const[dihedrals]  # [n, pairs]
    return np.sort(per_pair, axis=1) @ _ORDER[:len(pairs)]


def candidates(count: int, seed: int, task_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` candidate augmentations of a task: (dihedral uint8 [count], colours uint8 [count, 10]).
    Candidate j comes from the j-th row of 10 uniform numbers of the task's stream, so it does not depend
    on `count`."""
    u = np.random.default_rng(derive_seed(seed, f"arc augment {task_id}")).random((count, 10))
    colours = np.zeros((count, 10), np.uint8)
    colours[:, 1:] = np.argsort(u[:, 1:], axis=1) + 1
    return (u[:, 0] * 8).astype(np.uint8), colours


def table(pairs: list[tuple[np.ndarray, np.ndarray | None]], k: int, seed: int, task_id: str
          ) -> tuple[np.ndarray, np.ndarray]:
    """The task's augmentations: identity, then up to k distinct others (see the module docstring).
    Returns (dihedral uint8 [n], colours uint8 [n, 10]), n <= 1 + k."""
    d = np.zeros(1, np.uint8)
    colours = np.arange(10, dtype=np.uint8)[None]
    if k > 0:
        cd, cc = candidates(RETRIES * k, seed, task_id)
        d, colours = np.concatenate([d, cd]), np.concatenate([colours, cc])
        _, first = np.unique(task_hashes(pairs, d, colours), return_index=True)
        keep = np.sort(first)[:1 + k]  # first occurrences in draw order; the identity (row 0) is always one
        d, colours = d[keep], colours[keep]
    return d, colours
