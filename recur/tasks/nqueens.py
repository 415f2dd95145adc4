"""N-Queens completion (as in the DIS paper): some queens of a solution are given, place the rest.

Tokens: 0 = PAD, 1 = empty cell, 2 = queen; vocab_size = 3, seq_len = size * size (row-major).
Functions here take and return token boards, uint8 [size * size] (or [n, size * size]). A board with
few given queens can have several completions, so `score` also accepts any legal completion.
"""

from __future__ import annotations

from functools import cache
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import RecurError
from .base import Split, Task
from .common import DIHEDRAL_INVERSE, derive_seed, read_lines  # noqa: F401
from .common import dihedral as square_dihedral

EMPTY, QUEEN = 1, 2
MAX_SIZE = 12  # `solutions` enumerates and keeps every solution: 14,200 for 12x12


def _check_given(size: int, min_given: int, max_given: int) -> None:
    if not 0 <= min_given <= max_given <= size:
        raise RecurError(f"nqueens needs 0 <= min_given <= max_given <= {size}, got min_given={min_given}, "
                         f"max_given={max_given}")


@cache
def _columns(size: int) -> np.ndarray:
    """int64 [S, size]: each solution's queen column per row, in lexicographic order (cached: do not edit)."""
    if not 1 <= size <= MAX_SIZE:
        raise RecurError(f"nqueens size must be in 1..{MAX_SIZE}, got {size}")
    full = (1 << size) - 1
    found: list[tuple[int, ...]] = []
    cols = [0] * size

    def place(row: int, used: int, down: int, up: int) -> None:
        # down/up: columns attacked in this row along the two diagonal directions
        if row == size:
            found.append(tuple(cols))
            return
        free = full & ~(used | down | up)
        while free:
            bit = free & -free
            free ^= bit
            cols[row] = bit.bit_length() - 1
            place(row + 1, used | bit, ((down | bit) << 1) & full, (up | bit) >> 1)

    place(0, 0, 0, 0)
    if not found:
        raise RecurError(f"nqueens: no solution exists for a {size}x{size} board; use 1 or 4..{MAX_SIZE}")
    return np.array(found, np.int64)


def _boards(cols: np.ndarray, size: int) -> np.ndarray:
    """Queen columns [n, size] -> token boards uint8 [n, size * size]."""
    boards = np.full((len(cols), size * size), EMPTY, np.uint8)
    boards[np.arange(len(cols))[:, None], np.arange(size) * size + cols] = QUEEN
    return boards


@cache
def solutions(size: int) -> np.ndarray:
    """Every N-queens solution as a token board, uint8 [S, size * size] (read-only; 92 for 8x8)."""
    boards = _boards(_columns(size), size)
    boards.flags.writeable = False  # cached and shared: no caller may edit it
    return boards


def generate(size: int, count: int, seed: int, min_given: int, max_given: int,
             exclude: set[bytes] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`count` boards with distinct inputs: (inputs uint8 [count, L], labels uint8 [count, L]).

    Each draws a random solution, its label, and keeps a uniform number in [min_given, max_given] of
    its queens. exclude holds input.tobytes() never to return. Same arguments, same bytes.
    """
    cols = _columns(size)
    cells = size * size
    _check_given(size, min_given, max_given)
    rng = np.random.default_rng(seed)
    seen = set(exclude or ())
    inputs, labels = [np.zeros((0, cells), np.uint8)], [np.zeros((0, cells), np.uint8)]
    found = attempts = 0
    cap = 20 * count + 1000  # draws before giving up: duplicates mean the board space is (nearly) used up
    while found < count and attempts < cap:
        batch = min(cap - attempts, max(256, 2 * (count - found)))
        attempts += batch
        full = _boards(cols[rng.integers(len(cols), size=batch)], size)
        given = rng.integers(min_given, max_given + 1, size=batch)
        # rank of each row in a random order: the rows ranked below k keep their queen (a uniform k-subset)
        rank = np.argsort(np.argsort(rng.random((batch, size)), axis=1), axis=1)
        drop = np.repeat(rank >= given[:, None], size, axis=1)  # [batch, L]: row r's flag on its cells
        cut = np.where(drop & (full == QUEEN), np.uint8(EMPTY), full)
        keep = []
        for i, row in enumerate(cut):
            if found + len(keep) < count and (key := row.tobytes()) not in seen:
                seen.add(key)
                keep.append(i)
        found += len(keep)
        inputs.append(cut[keep])
        labels.append(full[keep])
    if found < count:
        avoided = f", avoiding {len(exclude)} excluded boards" if exclude else ""
        raise RecurError(f"nqueens {size}x{size} generation: found only {found} of {count} distinct boards "
                         f"with {min_given}..{max_given} given queens in {attempts} draws{avoided}; ask for "
                         "fewer boards or widen data.nqueens.min_given..max_given")
    return np.concatenate(inputs), np.concatenate(labels)


def dihedral(board: np.ndarray, k: int) -> np.ndarray:
    """Symmetry k (0..7, see recur.tasks.common.dihedral) of row-major boards [..., size * size]."""
    b = np.asarray(board)
    size = int(round(b.shape[-1] ** 0.5))
    if size * size != b.shape[-1]:
        raise ValueError(f"dihedral needs a square board, got {b.shape[-1]} cells")
    return square_dihedral(b.reshape(*b.shape[:-1], size, size), k).reshape(b.shape)


def _shared(boards: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(queen counts [n], queens each board [n, L] shares with each solution [n, S])."""
    queens = (np.asarray(boards).reshape(-1, size * size) == QUEEN).astype(np.int64)
    return queens.sum(1), queens @ (solutions(size) == QUEEN).T.astype(np.int64)


def _completion_counts(inputs: np.ndarray, size: int) -> np.ndarray:
    """int64 [n]: solutions holding every given queen of each input board [n, L]."""
    given, shared = _shared(inputs, size)
    return (shared == given[:, None]).sum(1)


def completions(inputs: np.ndarray, size: int) -> int:
    """How many solutions contain every queen given on the board."""
    return int(_completion_counts(inputs, size)[0])


def _valid_rows(inputs: np.ndarray, answers: np.ndarray, size: int) -> np.ndarray:
    """bool [n]: each answer [n, L] is a solution (so only 1/2 tokens) keeping its input's queens."""
    p = np.asarray(inputs).reshape(-1, size * size)
    a = np.asarray(answers).reshape(len(p), -1)
    if a.shape[1] != size * size:
        return np.zeros(len(p), bool)
    queens, shared = _shared(a, size)
    # a board with exactly N queens, all of them on one solution's cells, is that solution
    solved = (queens == size) & (shared.max(1) == size) & ((a == EMPTY) | (a == QUEEN)).all(1)
    return solved & ((p != QUEEN) | (a == QUEEN)).all(1)


def is_valid_completion(inputs: np.ndarray, answer: np.ndarray, size: int) -> bool:
    """Whether `answer` is a legal N-queens board (N queens, none attacking) containing every given queen."""
    a = np.asarray(answer).reshape(-1)
    return a.size == size * size and bool(_valid_rows(np.asarray(inputs).reshape(1, -1), a[None], size)[0])


def render(tokens: np.ndarray, size: int) -> str:
    """`Q` for a queen, `.` for an empty cell (`?` for any other token), one row per line."""
    glyph = {EMPTY: ".", QUEEN: "Q"}
    grid = np.asarray(tokens).reshape(size, size).tolist()
    return "\n".join(" ".join(glyph.get(t, "?") for t in row) for row in grid)


def parse_board(text: str, size: int) -> np.ndarray:
    """Board text (`Q`, `q` or `1` a queen; `.` or `0` empty; whitespace ignored) -> tokens uint8 [L]."""
    _columns(size)
    glyphs = {"Q": QUEEN, "q": QUEEN, "1": QUEEN, ".": EMPTY, "0": EMPTY}
    cells = []
    for pos, ch in enumerate(text, 1):
        if ch in glyphs:
            cells.append(glyphs[ch])
        elif not ch.isspace():
            raise RecurError(f"board: bad character {ch!r} at position {pos}; use Q (or 1) for a queen, "
                             ". (or 0) for an empty cell")
    if len(cells) != size * size:
        raise RecurError(f"board has {len(cells)} cells, expected {size * size} ({size}x{size})")
    queens = [divmod(int(c), size) for c in np.flatnonzero(np.array(cells) == QUEEN)]
    for i, (r1, c1) in enumerate(queens):
        for r2, c2 in queens[i + 1:]:
            if r1 == r2 or c1 == c2 or abs(r1 - r2) == abs(c1 - c2):
                raise RecurError(f"board: the queens at row {r1 + 1}, column {c1 + 1} and row {r2 + 1}, "
                                 f"column {c2 + 1} attack each other")
    return np.array(cells, np.uint8)


def _split(inputs: np.ndarray, labels: np.ndarray) -> Split:
    """inputs/labels [groups, members, L] -> a split where each group's first member is the base board."""
    n, k, cells = inputs.shape
    total = n * k
    return {"inputs": inputs.reshape(total, cells), "labels": labels.reshape(total, cells),
            "puzzle_ids": np.zeros(total, np.int32), "puzzle_index": np.arange(total + 1, dtype=np.int64),
            "group_index": np.arange(0, total + 1, k, dtype=np.int64)}


@dataclass
class NQueensData:
    """N-Queens completion (as in the DIS paper): a board with some queens of a solution given; fill in the rest."""

    size: int = 8
    """Board side N (N queens)."""
    train_size: int = 900
    """Base training boards (x8 with `dihedral`: 7,200 as in the DIS paper)."""
    test_size: int = 200
    """Held-out boards."""
    min_given: int = 1
    """Fewest queens given."""
    max_given: int = 7
    """Most queens given."""
    dihedral: bool = True
    """Store the 8 rotations/reflections of each training board as its group."""

    def check(self) -> None:
        """RecurError naming the first setting no dataset can be built from."""
        _columns(self.size)
        if self.train_size <= 0:
            raise RecurError(f"data.nqueens.train_size must be > 0, got {self.train_size}")
        if self.test_size < 0:
            raise RecurError(f"data.nqueens.test_size must be >= 0, got {self.test_size}")
        _check_given(self.size, self.min_given, self.max_given)


def build_splits(cfg: NQueensData, seed: int) -> tuple[dict[str, Split], dict]:
    """({"train": split, "test": split}, info); byte-identical per (cfg, seed).

    Train boards form groups of their 8 dihedral images (identity first) with `dihedral`, else 1.
    Test boards never equal any image of a training input and are not augmented.
    """
    cfg.check()
    size = cfg.size
    given = (cfg.min_given, cfg.max_given)
    inputs, labels = generate(size, cfg.train_size, derive_seed(seed, "train"), *given)
    images = np.stack([dihedral(inputs, k) for k in range(8)], axis=1)  # [n, 8, L]
    test = generate(size, cfg.test_size, derive_seed(seed, "test"), *given,
                    exclude={row.tobytes() for row in images.reshape(-1, size * size)})
    if cfg.dihedral:
        train = _split(images, np.stack([dihedral(labels, k) for k in range(8)], axis=1))
    else:
        train = _split(inputs[:, None], labels[:, None])
    splits = {"train": train, "test": _split(test[0][:, None], test[1][:, None])}
    return splits, {"vocab_size": 3, "seq_len": size * size, "num_puzzle_ids": 1, "size": size}


class NQueens(Task):
    """N-Queens completion as a recur task."""

    name = "nqueens"
    config = NQueensData

    def build(self, cfg: NQueensData, seed: int) -> tuple[dict[str, Split], dict]:
        return build_splits(cfg, seed)

    def parse(self, text: str, info: dict) -> np.ndarray:
        return parse_board(text, info["size"])

    def read_puzzles(self, path: Path, info: dict) -> list[tuple[int, str]]:
        """Non-blank, non-# lines in order; a board ends at its size*size-th cell, so it may sit on
        one line or span several (as `render` prints it)."""
        cells = info["size"] ** 2
        lines = read_lines(path)
        boards: list[tuple[int, str]] = []
        part: list[str] = []
        have = start = 0
        for number, line in enumerate(map(str.strip, lines), 1):
            if not line or line.startswith("#"):
                continue
            start = start if part else number
            part.append(line)
            have += sum(not ch.isspace() for ch in line)
            if have > cells:
                raise RecurError(f"{path} line {number}: the board starting on line {start} has more than "
                                 f"{cells} cells")
            if have == cells:
                boards.append((start, "\n".join(part)))
                part, have = [], 0
        if part:
            raise RecurError(f"{path}: the board starting on line {start} ends after {have} of {cells} cells")
        return boards

    def render(self, tokens: np.ndarray, info: dict) -> str:
        return render(tokens, info["size"])

    def verify(self, inputs: np.ndarray, answer: np.ndarray, info: dict) -> bool:
        return is_valid_completion(inputs, answer, info["size"])

    def score(self, inputs: np.ndarray, labels: np.ndarray, answers: np.ndarray, info: dict
              ) -> dict[str, np.ndarray]:
        """valid_completion: the answer is a legal completion (maybe not the label); ambiguous: the
        input has several completions, where exact match against the one label understates a model."""
        return {"valid_completion": _valid_rows(inputs, answers, info["size"]).astype(np.float64),
                "ambiguous": (_completion_counts(inputs, info["size"]) > 1).astype(np.float64)}
