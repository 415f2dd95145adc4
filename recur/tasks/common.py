"""Helpers the tasks share: derived seeds, subsampling, an ordered parallel map, the dihedral
group of square grids, and reading a text file of puzzles."""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import RecurError

DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)
"""dihedral(dihedral(g, k), DIHEDRAL_INVERSE[k]) == g: quarter turns undo each other, reflections themselves."""


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed per purpose, so the streams of train, test, augmentation, each chunk... are independent."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}".encode()).digest()[:8], "little") >> 1


def subsample(data: tuple[np.ndarray, ...], size: int, seed: int) -> tuple[np.ndarray, ...]:
    """`size` rows drawn without replacement (file order kept); all rows when size is 0 or too big."""
    rows = len(data[0])
    if not 0 < size < rows:
        return data
    keep = np.sort(np.random.default_rng(seed).choice(rows, size, replace=False))
    return tuple(column[keep] for column in data)


def ordered_map(fn: Callable, jobs: Iterable, workers: int) -> Iterator:
    """fn(job) for each job in order, `workers` processes at a time; lazy, so callers may stop early."""
    if workers <= 1:
        yield from map(fn, jobs)
        return
    with ProcessPoolExecutor(workers) as pool:
        pending: deque = deque()
        try:
            for job in jobs:
                pending.append(pool.submit(fn, job))
                if len(pending) > 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """The k-th (0..7) symmetry of the square grids on the last two axes: k % 4 quarter turns
    (np.rot90), after a transpose when k >= 4. k = 0 is the identity."""
    if not 0 <= k < 8:
        raise ValueError(f"dihedral symmetry index must be 0..7, got {k}")
    g = np.asarray(grid)
    if k >= 4:
        g = np.swapaxes(g, -1, -2)
    return np.ascontiguousarray(np.rot90(g, k % 4, axes=(-2, -1)))


def dihedral_inverse(grid: np.ndarray, k: int) -> np.ndarray:
    """Undo dihedral(., k)."""
    return dihedral(grid, DIHEDRAL_INVERSE[k])


def read_lines(path: Path) -> list[str]:
    """A UTF-8 text file's lines (a byte-order mark dropped; LF, CRLF or CR endings); RecurError if it cannot be
    read."""
    try:
        return Path(path).read_text(encoding="utf-8-sig").splitlines()
    except OSError as e:
        raise RecurError(f"{path}: cannot read the puzzle file ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise RecurError(f"{path}: the puzzle file is not UTF-8 text (byte {e.start})") from None


CSV_HEADER = "source,q,a,rating"  # the HRM/TRM dataset builders' CSV layout


def check_csv_pair(task: str, train_csv: str, test_csv: str) -> None:
    """Training and test CSVs come together or not at all."""
    if bool(train_csv) != bool(test_csv):
        given = "train_csv" if train_csv else "test_csv"
        raise RecurError(f"data.{task}.{given} is set alone; set both train_csv and test_csv, or neither")


def csv_q_column(path: Path, numbered: list[tuple[int, str]]) -> list[tuple[int, str]] | None:
    """(line number, q column) of each row when the non-blank (line number, line) pairs of a puzzle file are a
    `source,q,a,...` CSV (None when they are not)."""
    if not (numbered and numbered[0][1].startswith("source,q,a")):
        return None
    out = []
    for number, line in numbered[1:]:
        fields = line.split(",")
        if len(fields) < 3:
            raise RecurError(f"{path} line {number}: {len(fields)} columns, expected {CSV_HEADER}")
        out.append((number, fields[1]))
    return out


def read_csv_blocks(path: str | Path, size: int | None, parse_rows: Callable, noun: str,
                    keep_spaces: bool = False) -> tuple[np.ndarray, ...]:
    """Read a `source,q,a,rating` CSV in ~64 MB blocks of lines.

    Each block's non-blank lines are split into fields and checked for the header's column count;
    `parse_rows(rows, fail, size)` turns them into (q, a, extra, size) arrays, where `fail(i, problem)`
    builds the error naming row i's line. The size found in the first rows must hold for the rest.
    `keep_spaces`: a trailing space is data (Maze's open cells), not padding. Returns (q, a, extra).
    """
    path = Path(path)
    try:
        f = path.open("rb")
    except OSError as e:
        raise RecurError(f"{path}: cannot read the {noun} CSV ({e.strerror})") from None
    parts = []
    with f:
        header = f.readline().removeprefix(b"\xef\xbb\xbf").strip().decode(errors="replace")
        if header not in (CSV_HEADER, "source,q,a"):
            raise RecurError(f"{path} line 1: header is {header!r}, expected {CSV_HEADER!r}")
        width, first = header.count(",") + 1, 2
        while lines := f.readlines(1 << 26):  # blocks keep the per-row Python objects bounded
            kept = [i for i, ln in enumerate(lines) if ln.strip()]
            rows = [(lines[i].rstrip(b"\r\n") if keep_spaces else lines[i].rstrip()).split(b",") for i in kept]

            def fail(row: int, problem: str, first=first, kept=kept) -> RecurError:
                return RecurError(f"{path} line {first + kept[row]}: {problem}")

            widths = np.fromiter(map(len, rows), np.int64, len(rows))
            if (bad := np.flatnonzero(widths != width)).size:
                raise fail(bad[0], f"has {widths[bad[0]]} columns, expected {width} ({header})")
            first += len(lines)
            if rows:
                q, a, extra, size = parse_rows(rows, fail, size)
                parts.append((q, a, extra))
    if not parts:
        raise RecurError(f"{path}: no {noun} rows after the header")
    return tuple(np.concatenate(column) for column in zip(*parts))


def cell_bytes(texts: Sequence[bytes], name: str, size: int, fail: Callable) -> np.ndarray:
    """The CSV column `name` as bytes [n, size*size]; a row of another length is an error naming it."""
    cells = size * size
    lengths = np.fromiter(map(len, texts), np.int64, len(texts))
    if (bad := np.flatnonzero(lengths != cells)).size:
        raise fail(bad[0], f"{name} has {lengths[bad[0]]} cells, expected {cells} ({size}x{size})")
    return np.frombuffer(b"".join(texts), np.uint8).reshape(-1, cells)
