"""Sudoku (4x4, 6x6, 9x9): exact solver, generator, augmentation, CSV reader and the Task.

Tokens match the reference TRM/HRM Sudoku data so their checkpoints load unchanged:
0 = PAD, 1 = blank cell, digit d -> token d + 1; vocab_size = size + 2, seq_len = size * size
(row-major). Everything else here works on *digit* grids, uint8 [size * size] with 0 for a
blank and 1..size for a digit.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import RecurError
from .base import Split, Task
from .common import CSV_HEADER  # noqa: F401  (the CSV layout, part of this module's public names)
from .common import cell_bytes, check_csv_pair, csv_q_column, derive_seed, ordered_map, read_csv_blocks, read_lines, subsample

BOX = {4: (2, 2), 6: (2, 3), 9: (3, 3)}
"""Box shape (rows, columns) per grid size."""

_CHUNK = 16  # puzzles per generation chunk: the unit of seeding, so output ignores the worker count
_TRIES = 20  # generation attempts a chunk may spend per puzzle it should deliver
_PARALLEL_CELLS = 16_000  # count * size^2 from which a second process pays for its start
_AUG_ROWS = 65_536  # augmented rows per numpy batch, bounding the int64 index arrays (~40 MB)


@cache
def _geometry(size: int) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...], int]:
    """(units, peers, full mask): the rows, columns and boxes, each cell's neighbours, all digits."""
    if size not in BOX:
        raise RecurError(f"sudoku size must be 4, 6 or 9, got {size}")
    br, bc = BOX[size]
    rows = [tuple(r * size + c for c in range(size)) for r in range(size)]
    cols = [tuple(r * size + c for r in range(size)) for c in range(size)]
    boxes = [
        tuple((r0 + r) * size + c0 + c for r in range(br) for c in range(bc))
        for r0 in range(0, size, br)
        for c0 in range(0, size, bc)
    ]
    units = tuple(rows + cols + boxes)
    peers = tuple(
        tuple(sorted({p for u in units if cell in u for p in u} - {cell})) for cell in range(size * size)
    )
    return units, peers, (1 << size) - 1


# --- solver: candidate bitmasks (bit d-1 = digit d possible) -------------------------------------


def _propagate(cand: list[int], stack: list[int], units, peers, full: int) -> bool:
    """Settle naked and hidden singles until none is left; False once a contradiction shows."""
    while True:
        while stack:
            cell = stack.pop()
            bit = cand[cell]
            for p in peers[cell]:
                m = cand[p]
                if m & bit:
                    m ^= bit
                    if not m:
                        return False
                    cand[p] = m
                    if not m & (m - 1):
                        stack.append(p)
        for unit in units:
            once = twice = 0
            for c in unit:
                m = cand[c]
                twice |= once & m
                once |= m
            if once != full:
                return False
            only = once & ~twice
            if only:
                for c in unit:
                    m = cand[c]
                    hit = m & only
                    if hit and hit != m:
                        if hit & (hit - 1):  # two digits can only go in this one cell
                            return False
                        cand[c] = hit
                        stack.append(c)
        if not stack:
            return True


class _Tally:
    __slots__ = ("guesses", "first")

    def __init__(self) -> None:
        self.guesses = 0
        self.first: list[int] | None = None


def _search(cand: list[int], stack: list[int], geo, limit: int, rng: random.Random | None,
            tally: _Tally) -> int:
    """Solutions below `cand` (at most `limit`); branches on the first cell with fewest candidates."""
    units, peers, full = geo
    if not _propagate(cand, stack, units, peers, full):
        return 0
    best, fewest = -1, 99
    for cell, m in enumerate(cand):
        if m & (m - 1):
            n = m.bit_count()
            if n < fewest:
                best, fewest = cell, n
                if n == 2:
                    break
    if best < 0:
        if tally.first is None:
            tally.first = cand
        return 1
    m = cand[best]
    options = [1 << d for d in range(full.bit_length()) if m >> d & 1]
    if rng is not None:
        rng.shuffle(options)
    found = 0
    for bit in options:
        tally.guesses += 1
        child = cand.copy()
        child[best] = bit
        found += _search(child, [best], geo, limit - found, rng, tally)
        if found >= limit:
            break
    return found


def _count(cand: list[int], size: int, limit: int, rng: random.Random | None = None) -> tuple[int, _Tally]:
    """Count solutions of a candidate grid up to `limit`; the tally holds guesses and the first one."""
    tally = _Tally()
    if 0 in cand:
        return 0, tally
    stack = [c for c, m in enumerate(cand) if not m & (m - 1)]
    return _search(cand, stack, _geometry(size), limit, rng, tally), tally


def _candidates(digits: Sequence[int], size: int) -> list[int]:
    """Digits -> candidate masks: a given is its own bit, a blank may be anything."""
    full = (1 << size) - 1
    return [1 << (d - 1) if d else full for d in digits]


def _as_digits(grid: np.ndarray | Sequence[int], size: int) -> list[int]:
    """A grid as a list of ints, checked to hold size*size digits in 0..size."""
    digits = np.asarray(grid).reshape(-1).tolist()
    _geometry(size)
    if len(digits) != size * size:
        raise RecurError(f"a {size}x{size} grid has {size * size} cells, got {len(digits)}")
    if not all(0 <= d <= size for d in digits):
        bad = next(d for d in digits if not 0 <= d <= size)
        raise RecurError(f"a {size}x{size} grid holds digits 0..{size} (0 = blank), got {bad}")
    return digits


def solve(grid: np.ndarray | Sequence[int], size: int, limit: int = 2) -> tuple[int, np.ndarray | None, int]:
    """(solutions found, capped at `limit`; the first solution or None; guesses made).

    A guess is one value tried at a branch point; with limit=1 the count is the puzzle's rating.
    """
    found, tally = _count(_candidates(_as_digits(grid, size), size), size, max(1, limit))
    first = None if tally.first is None else np.array([m.bit_length() for m in tally.first], np.uint8)
    return found, first, tally.guesses


def rating(grid: np.ndarray | Sequence[int], size: int) -> int:
    """Difficulty: guesses the deterministic solver needs to reach the first solution."""
    return solve(grid, size, limit=1)[2]


# --- generation -----------------------------------------------------------------------------------


def _make_puzzle(size: int, givens: int, rng: random.Random) -> tuple[list[int], list[int]] | None:
    """A random unique puzzle and its solution, or None if it cannot get down to `givens` clues."""
    _, tally = _count([(1 << size) - 1] * (size * size), size, 1, rng)
    solution = [m.bit_length() for m in tally.first]
    puzzle = solution.copy()
    order = list(range(size * size))
    rng.shuffle(order)
    clues = len(order)
    full = (1 << size) - 1
    for cell in order:
        if clues == givens:
            break
        digit = puzzle[cell]
        puzzle[cell] = 0
        cand = _candidates(puzzle, size)
        # The puzzle stays unique iff no solution puts another digit in the freed cell.
        cand[cell] = full & ~(1 << (digit - 1))
        if _count(cand, size, 1)[0]:
            puzzle[cell] = digit
        else:
            clues -= 1
    if givens and clues != givens:
        return None
    return puzzle, solution


def _generate_chunk(job: tuple[int, ...]) -> tuple[list[tuple[bytes, bytes, int]], int]:
    """Up to `want` puzzles passing the filters from chunk `index`'s own seed, and the attempts spent."""
    size, want, seed, index, givens, min_rating, max_rating = job
    rng = random.Random(f"sudoku:{seed}:{index}")
    made: list[tuple[bytes, bytes, int]] = []
    attempts = 0
    while len(made) < want and attempts < _TRIES * want:
        attempts += 1
        pair = _make_puzzle(size, givens, rng)
        if pair is None:
            continue
        score = _count(_candidates(pair[0], size), size, 1)[1].guesses
        if score >= min_rating and (max_rating < 0 or score <= max_rating):
            made.append((bytes(pair[0]), bytes(pair[1]), score))
    return made, attempts


def generate(
    size: int,
    count: int,
    seed: int,
    givens: int = 0,
    min_rating: int = 0,
    max_rating: int = -1,
    exclude: set[bytes] | None = None,
    *,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` distinct unique-solution puzzles: (puzzles uint8 [count, L], solutions, ratings int32).

    givens=0 makes minimal puzzles (no clue can go); exclude holds puzzle.tobytes() never to return.
    The output depends only on the arguments, not on `workers` (None = 2 processes for big jobs).
    """
    cells = size * size
    _geometry(size)
    if not 0 <= givens <= cells:
        raise RecurError(f"data.sudoku.givens must be in 0..{cells} for {size}x{size}, got {givens}")
    if count <= 0:
        return np.zeros((0, cells), np.uint8), np.zeros((0, cells), np.uint8), np.zeros(0, np.int32)
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if count * cells >= _PARALLEL_CELLS else 1
    want = min(_CHUNK, count)
    max_chunks = 8 * -(-count // want) + 8
    jobs = ((size, want, seed, i, givens, min_rating, max_rating) for i in range(max_chunks))
    limits = [f"givens={givens}"] * (givens > 0) + [f"min_rating={min_rating}"] * (min_rating > 0)
    limits += [f"max_rating={max_rating}"] * (max_rating >= 0)
    seen = set(exclude or ())
    rows: list[tuple[bytes, bytes, int]] = []
    attempts = 0
    with closing(ordered_map(_generate_chunk, jobs, workers)) as results:
        for made, spent in results:
            attempts += spent
            if not made:
                raise RecurError(f"sudoku {size}x{size} generation: none of {spent} attempts met "
                                 f"{', '.join(limits)}; loosen these data.sudoku settings")
            for row in made:
                if row[0] not in seen:
                    seen.add(row[0])
                    rows.append(row)
            if len(rows) >= count:
                break
    if len(rows) < count:
        wanted = f" with {', '.join(limits)}" if limits else ""
        raise RecurError(f"sudoku {size}x{size} generation: found only {len(rows)} of {count} distinct "
                         f"puzzles{wanted} in {attempts} attempts; ask for fewer or loosen the filters")
    rows = rows[:count]
    puzzles = np.frombuffer(b"".join(r[0] for r in rows), np.uint8).reshape(count, cells).copy()
    solutions = np.frombuffer(b"".join(r[1] for r in rows), np.uint8).reshape(count, cells).copy()
    return puzzles, solutions, np.array([r[2] for r in rows], np.int32)


# --- augmentation ---------------------------------------------------------------------------------


def _perms(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Independent random permutations of range(shape[-1]) along the last axis."""
    return np.argsort(rng.random(shape), axis=-1)


def _augment_many(puzzles: np.ndarray, solutions: np.ndarray, size: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One independent random symmetry per row of puzzles/solutions [n, L] (see `augment`)."""
    n = len(puzzles)
    br, bc = BOX[size]
    relabel = np.zeros((n, size + 1), np.int64)  # column 0 keeps blanks blank
    relabel[:, 1:] = _perms(rng, (n, size)) + 1
    rows = (_perms(rng, (n, size // br))[:, :, None] * br + _perms(rng, (n, size // br, br))).reshape(n, size)
    cols = (_perms(rng, (n, size // bc))[:, :, None] * bc + _perms(rng, (n, size // bc, bc))).reshape(n, size)
    # Output cell (r, c) reads rows[r] * row_stride + cols[c] * col_stride; swapping the strides
    # transposes, which maps boxes onto boxes only when they are square.
    flip = rng.random(n) < 0.5 if br == bc else np.zeros(n, bool)
    row_stride = np.where(flip, 1, size)[:, None, None]
    col_stride = np.where(flip, size, 1)[:, None, None]
    source = (rows[:, :, None] * row_stride + cols[:, None, :] * col_stride).reshape(n, size * size)
    offset = np.arange(n)[:, None] * (size + 1)  # row i's digit map starts here in relabel.ravel()
    flat = relabel.ravel()
    return tuple(flat[offset + np.take_along_axis(grids, source, axis=1)].astype(grids.dtype)
                 for grids in (puzzles, solutions))


def augment(puzzle: np.ndarray, solution: np.ndarray, size: int, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """Apply one random validity-preserving shuffle to a puzzle and its solution.

    Relabels digits, transposes with probability 1/2 (square boxes only), permutes bands and the
    rows within each, and stacks and the columns within each.
    """
    p, s = _augment_many(np.asarray(puzzle)[None], np.asarray(solution)[None], size, rng)
    return p[0], s[0]


# --- text and files -------------------------------------------------------------------------------


def _where(cell: int, size: int) -> str:
    """A cell index as 1-based 'row r, column c'."""
    return f"row {cell // size + 1}, column {cell % size + 1}"


def _conflict(digits: Sequence[int], size: int) -> str | None:
    """The first repeated digit, e.g. 'digit 5 repeats in row 3' (1-based), or None."""
    kinds = ("row", "column", "box")
    for k, unit in enumerate(_geometry(size)[0]):
        seen: set[int] = set()
        for cell in unit:
            d = digits[cell]
            if d in seen:
                return f"digit {d} repeats in {kinds[k // size]} {k % size + 1}"
            if d:
                seen.add(d)
    return None


def parse_puzzle(text: str, size: int | None = None) -> np.ndarray:
    """Puzzle text (16/36/81 cells; `.` or `0` blank; spaces, |, -, + ignored) -> digits uint8 [L]."""
    digits = []
    for pos, ch in enumerate(text, 1):
        if ch in "0123456789.":
            digits.append(0 if ch == "." else int(ch))
        elif not (ch.isspace() or ch in "|-+"):
            raise RecurError(f"puzzle: bad character {ch!r} at position {pos}; "
                             "use digits, and . or 0 for blanks")
    expected = [size * size] if size else [s * s for s in BOX]
    if len(digits) not in expected:
        options = f"{size * size} ({size}x{size})" if size else "16, 36 or 81"
        raise RecurError(f"puzzle has {len(digits)} cells, expected {options}")
    size = size or round(len(digits) ** 0.5)
    for cell, d in enumerate(digits):
        if d > size:
            raise RecurError(f"puzzle: digit {d} at {_where(cell, size)} is larger than the grid size {size}")
    problem = _conflict(digits, size)
    if problem:
        raise RecurError(f"puzzle givens contradict each other: {problem}")
    return np.array(digits, np.uint8)


def _legal(grids: np.ndarray, size: int) -> np.ndarray:
    """bool [n]: each complete grid of digits 1..size [n, L] has every digit once per unit."""
    br, bc = BOX[size]
    bits = (np.left_shift(1, grids.astype(np.int32) - 1)).astype(np.uint16).reshape(-1, size, size)
    full = (1 << size) - 1
    boxes = bits.reshape(-1, size // br, br, size // bc, bc)
    return ((np.bitwise_or.reduce(bits, axis=2) == full).all(1)
            & (np.bitwise_or.reduce(bits, axis=1) == full).all(1)
            & (np.bitwise_or.reduce(boxes, axis=(2, 4)) == full).all((1, 2)))


def is_valid_solution(puzzle: np.ndarray, solution: np.ndarray, size: int) -> bool:
    """Whether `solution` is a complete legal grid that keeps every given of `puzzle`."""
    p = np.asarray(puzzle).reshape(-1).astype(np.int64)
    s = np.asarray(solution).reshape(-1).astype(np.int64)
    if len(p) != size * size or len(s) != size * size or s.min() < 1 or s.max() > size:
        return False
    return bool(np.all((p == 0) | (p == s)) and _legal(s[None], size)[0])


_LUT = np.full(256, 255, np.uint8)  # byte -> digit; 255 marks a character that is no cell
_LUT[ord(".")] = 0
_LUT[ord("0") : ord("9") + 1] = np.arange(10)


def _csv_rows(rows: list[list[bytes]], fail, size: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Check CSV rows (see read_csv_blocks) -> (q digits, a digits, ratings, size)."""
    _, qs, answers, *rest = zip(*rows)
    if size is None:
        size = round(len(qs[0]) ** 0.5)
        if size not in BOX or size * size != len(qs[0]):
            raise fail(0, f"q has {len(qs[0])} cells, expected 16, 36 or 81")
    digits = []
    for name, texts in (("q", qs), ("a", answers)):
        raw = cell_bytes(texts, name, size, fail)
        d = _LUT[raw]
        low = 1 if name == "a" else 0  # the solution may not have blanks
        if (bad := np.argwhere((d < low) | (d > size))).size:
            r, c = bad[0]
            raise fail(r, f"{name} has bad character {chr(raw[r, c])!r} at position {c + 1} "
                          f"(expected {'' if low else '. or 0 for blanks, '}digits 1-{size})")
        digits.append(d)
    q, a = digits
    if (bad := np.flatnonzero(~_legal(a, size))).size:
        raise fail(bad[0], f"a is not a legal solution: {_conflict(a[bad[0]].tolist(), size)}")
    if (bad := np.argwhere((q != 0) & (q != a))).size:
        r, c = bad[0]
        raise fail(r, f"a disagrees with q at {_where(c, size)} (q has {q[r, c]}, a has {a[r, c]})")
    ratings = np.full(len(rows), -1, np.int32)
    if rest:
        for i, text in enumerate(rest[0]):
            if text:
                if not text.lstrip(b"-").isdigit():
                    raise fail(i, f"rating {text.decode(errors='replace')!r} is not an integer")
                ratings[i] = int(text)
    return q, a, ratings, size


def read_csv(path: str | Path, size: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a `source,q,a,rating` CSV -> (puzzles, solutions uint8 [n, L], ratings int32; -1 if absent).

    The size comes from the first row's q (16, 36 or 81 cells) and must equal `size` when given.
    """
    return read_csv_blocks(path, size, _csv_rows, "puzzle")


def render(digits: np.ndarray | Sequence[int], size: int) -> str:
    """A digit grid as text with box separators and `.` for blanks."""
    br, bc = BOX[size]
    grid = np.asarray(digits).reshape(size, size).tolist()
    stacks = size // bc
    rule = "+".join("-" * (2 * bc + 1 - (i == 0) - (i == stacks - 1)) for i in range(stacks))
    lines = []
    for r, row in enumerate(grid):
        if r and r % br == 0:
            lines.append(rule)
        cells = [str(d) if d else "." for d in row]
        lines.append(" | ".join(" ".join(cells[c : c + bc]) for c in range(0, size, bc)))
    return "\n".join(lines)


def to_tokens(digits: np.ndarray) -> np.ndarray:
    """Digits -> tokens: blank 0 -> 1, digit d -> d + 1."""
    return np.asarray(digits).astype(np.uint8) + np.uint8(1)


def from_tokens(tokens: np.ndarray) -> np.ndarray:
    """Tokens -> digits: t >= 2 -> t - 1; PAD (0) and blank (1) -> 0."""
    t = np.asarray(tokens).astype(np.int64)
    return np.where(t >= 2, t - 1, 0).astype(np.uint8)


# --- dataset --------------------------------------------------------------------------------------


def _split(puzzles: np.ndarray, solutions: np.ndarray, ratings: np.ndarray, k: int, size: int, seed: int
           ) -> Split:
    """Tokens and indices of one split; each puzzle is a group with k augmented copies after it."""
    n, cells = puzzles.shape
    inputs = np.empty((n, 1 + k, cells), np.uint8)
    labels = np.empty((n, 1 + k, cells), np.uint8)
    inputs[:, 0], labels[:, 0] = puzzles, solutions
    rng = np.random.default_rng(seed)
    step = max(1, _AUG_ROWS // max(k, 1))
    for lo in range(0, n if k else 0, step):
        hi = min(n, lo + step)
        p, s = _augment_many(np.repeat(puzzles[lo:hi], k, 0), np.repeat(solutions[lo:hi], k, 0), size, rng)
        inputs[lo:hi, 1:], labels[lo:hi, 1:] = p.reshape(hi - lo, k, cells), s.reshape(hi - lo, k, cells)
    total = n * (1 + k)
    return {
        "inputs": to_tokens(inputs.reshape(total, cells)),
        "labels": to_tokens(labels.reshape(total, cells)),
        "puzzle_ids": np.zeros(total, np.int32),  # one shared puzzle-embedding row, as in the reference
        "puzzle_index": np.arange(total + 1, dtype=np.int64),
        "group_index": np.arange(0, total + 1, 1 + k, dtype=np.int64),
        "ratings": np.repeat(ratings.astype(np.int32), 1 + k),  # a shuffle keeps the base's difficulty
    }


@dataclass
class SudokuData:
    """Sudoku puzzles: generated, or read from the HRM/TRM CSV layout (source,q,a,rating)."""

    size: Literal[4, 6, 9] = 9
    """Grid side; boxes are 2x2, 2x3 and 3x3."""
    train_size: int = 1000
    """Base training puzzles (generated, or drawn from train_csv; 0 = every CSV row)."""
    test_size: int = 1000
    """Held-out puzzles (generated, or drawn from test_csv; 0 = every CSV row)."""
    augmentations: int = 1000
    """K: each training puzzle is stored with K validity-preserving shuffles (a group of 1+K)."""
    givens: int = 0
    """Generated puzzles keep this many clues (0 = remove clues until no more can go: minimal puzzles)."""
    min_rating: int = 0
    """Keep generated puzzles whose rating (solver guesses) is at least this."""
    max_rating: int = -1
    """Keep generated puzzles whose rating is at most this (-1 = no limit)."""
    train_csv: str = ""
    """Training CSV (source,q,a,rating; `.` or `0` blank) instead of generated puzzles."""
    test_csv: str = ""
    """Test CSV in the same layout."""

    def check(self) -> None:
        """RecurError naming the first setting no dataset can be built from."""
        _geometry(self.size)
        check_csv_pair("sudoku", self.train_csv, self.test_csv)
        for key in ("train_size", "test_size", "augmentations", "min_rating"):
            if getattr(self, key) < 0:
                raise RecurError(f"data.sudoku.{key} must be >= 0, got {getattr(self, key)}")
        for key in ("train_size", "test_size"):
            if not self.train_csv and getattr(self, key) == 0:
                raise RecurError(f"data.sudoku.{key} must be > 0 for generated puzzles (0 = all CSV rows)")
        if not 0 <= self.givens <= self.size * self.size:
            raise RecurError(f"data.sudoku.givens must be in 0..{self.size * self.size} for {self.size}x{self.size}, "
                             f"got {self.givens}")
        if self.max_rating < -1 or 0 <= self.max_rating < self.min_rating:
            raise RecurError(f"data.sudoku.max_rating must be -1 (no limit) or >= min_rating, got {self.max_rating}")


def build_splits(cfg: SudokuData, seed: int) -> tuple[dict[str, Split], dict]:
    """({"train": split, "test": split}, info) from the Sudoku settings; byte-identical per (cfg, seed)."""
    cfg.check()
    size = cfg.size
    if cfg.train_csv:
        train = subsample(read_csv(cfg.train_csv, size), cfg.train_size, derive_seed(seed, "train rows"))
        test = subsample(read_csv(cfg.test_csv, size), cfg.test_size, derive_seed(seed, "test rows"))
    else:
        limits = (cfg.givens, cfg.min_rating, cfg.max_rating)
        train = generate(size, cfg.train_size, derive_seed(seed, "train"), *limits)
        test = generate(size, cfg.test_size, derive_seed(seed, "test"), *limits,
                        exclude={p.tobytes() for p in train[0]})
    splits = {
        "train": _split(*train, cfg.augmentations, size, derive_seed(seed, "augment")),
        "test": _split(*test, 0, size, 0),
    }
    info = {"vocab_size": size + 2, "seq_len": size * size, "num_puzzle_ids": 1, "size": size}
    return splits, info


class Sudoku(Task):
    """Sudoku as a recur task: generated or CSV puzzles, tokens as in the reference TRM/HRM data."""

    name = "sudoku"
    config = SudokuData

    def build(self, cfg: SudokuData, seed: int) -> tuple[dict[str, Split], dict]:
        return build_splits(cfg, seed)

    def parse(self, text: str, info: dict) -> np.ndarray:
        return to_tokens(parse_puzzle(text, info["size"]))

    def read_puzzles(self, path: Path, info: dict) -> list[tuple[int, str]]:
        """Non-blank, non-# lines of a file, or the q column of a `source,q,a,rating` CSV."""
        lines = read_lines(path)
        numbered = [(n, ln.strip()) for n, ln in enumerate(lines, 1) if ln.strip()]
        if (puzzles := csv_q_column(path, numbered)) is not None:
            return puzzles
        return [(n, line) for n, line in numbered if not line.startswith("#")]

    def render(self, tokens: np.ndarray, info: dict) -> str:
        return render(from_tokens(tokens), info["size"])

    def verify(self, inputs: np.ndarray, answer: np.ndarray, info: dict) -> bool:
        return is_valid_solution(from_tokens(inputs), from_tokens(answer), info["size"])
