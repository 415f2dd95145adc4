"""Mazes as in Maze-Hard (HRM/TRM): generator, BFS checks, dihedral symmetries, CSV reader and the Task.

Tokens match the reference data so its checkpoints and CSV files work unchanged: the characters
`# SGo` (wall, open, start, goal, path) are tokens 1..5, 0 = PAD, vocab_size 6, seq_len size * size
(row-major). An input holds `#`, ` `, `S` and `G`, one S and one G; its label is the same grid with
the cells of one shortest S-G path drawn as `o`. Moves are 4-neighbour steps, so a path of m moves
has m - 1 `o` cells. Every cell is supervised.

Generator. Maze-Hard keeps 30x30 mazes with 30-50 % random walls whose shortest start-goal path has
more than 110 moves. Walls here are as random: each cell is a wall with probability f, f uniform in
[wall_min, wall_max] per maze. But with S and G uniform on the open cells only ~1.5e-5 of such mazes
pass a 110-move filter (1 in ~70,000; a random start has some cell 110 moves away 1 time in ~2,000):
long paths need a wall density near the percolation threshold, where most mazes fall apart. So S
and G are placed where the long paths are (a double sweep): a BFS from a random open cell R finds a
farthest cell A, which ends a near-longest shortest path of R's component; a BFS from A finds the
cells at least min_path moves away, and the other end is drawn uniformly among them (so lengths
spread from min_path up, as under a plain length filter); a coin decides which end is S. A maze is
rejected when no such cell exists. Measured on 30x30 with min_path 110: 0.5 % of random wall
layouts pass (~350x the plain filter); the kept mazes match a plain filter's in wall fraction (mean
37 %, almost all 35-45 %) and path length (mean ~113 moves vs ~114, 99th percentile ~125); 2000
mazes take ~3.5 s on two cores. Longer paths get rare fast: 0.12 % pass at min_path 120, 0.02 % at
130 (2000 mazes in ~1.5 minutes), 0.002 % at 140.

The BFS works on bit rows: each maze row is one uint64 (bit c = column c), so a step of a BFS over a
whole batch of mazes is a few shifts and ands on [B, size] words; hence size <= 64.
"""

from __future__ import annotations

import os
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import RecurError
from .base import Split, Task
from .common import (  # noqa: F401  (dihedral names are re-exported for the tests and users)
    CSV_HEADER, DIHEDRAL_INVERSE, cell_bytes, check_csv_pair, csv_q_column, derive_seed, dihedral, dihedral_inverse, ordered_map, read_csv_blocks,
    read_lines, subsample)

CHARS = "# SGo"
"""Token t (1..5) is CHARS[t - 1]."""
WALL, OPEN, START, GOAL, PATH = 1, 2, 3, 4, 5
VOCAB_SIZE = 6
MAX_SIZE = 64

_CHUNK = 16  # mazes per generation chunk: the unit of seeding, so output ignores the worker count
_BATCH = 2048  # candidate wall layouts per numpy batch, at most
_BUDGET = 32 * _BATCH  # candidates a chunk may try before it gives up
_PARALLEL_CELLS = 16_000  # count * size^2 from which a second process pays for its start
_ONE = np.uint64(1)
_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # neighbour order of the path trace: up, down, left, right


def _check_size(size: int) -> None:
    if not 2 <= size <= MAX_SIZE:
        raise RecurError(f"maze size must be 2..{MAX_SIZE}, got {size}")


def _check_limits(size: int, min_path: int, wall_min: float, wall_max: float) -> None:
    cells = size * size
    if not 0 <= min_path <= cells - 1:
        raise RecurError(f"data.maze.min_path must be in 0..{cells - 1} for {size}x{size}, got {min_path}")
    if not 0 <= wall_min <= wall_max < 1:
        raise RecurError(f"data.maze wall fractions need 0 <= wall_min <= wall_max < 1, "
                         f"got wall_min={wall_min}, wall_max={wall_max}")


# --- BFS on bit rows ------------------------------------------------------------------------------


def _pack(mask: np.ndarray) -> np.ndarray:
    """bool [B, n, n] -> bit rows uint64 [B, n] (bit c of row r = cell (r, c))."""
    b, h, _ = mask.shape
    packed = np.packbits(mask, axis=2, bitorder="little")
    words = np.zeros((b, h, 8), np.uint8)
    words[:, :, : packed.shape[2]] = packed
    return words.view("<u8")[:, :, 0].astype(np.uint64)


def _unpack(bits: np.ndarray, size: int) -> np.ndarray:
    """Bit rows uint64 [B, n] -> bool [B, n * size]."""
    raw = np.ascontiguousarray(bits, dtype="<u8").view(np.uint8).reshape(*bits.shape, 8)
    return np.unpackbits(raw, axis=-1, bitorder="little")[..., :size].astype(bool).reshape(len(bits), -1)


def _onehot(cell: np.ndarray, size: int) -> np.ndarray:
    """Cell indices int [B] -> bit rows [B, n] with that one cell set."""
    bits = np.zeros((len(cell), size), np.uint64)
    bits[np.arange(len(cell)), cell // size] = _ONE << (cell % size).astype(np.uint64)
    return bits


def _grow(front: np.ndarray, free: np.ndarray) -> np.ndarray:
    """The cells of `free` 4-adjacent to `front` (bit rows [B, n])."""
    nb = (front << _ONE) | (front >> _ONE)
    nb[:, 1:] |= front[:, :-1]
    nb[:, :-1] |= front[:, 1:]
    nb &= free
    return nb


def _sweep(passable: np.ndarray, start: np.ndarray, far_from: int | None = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A full BFS from `start` in each maze -> (eccentricity int [B]; its last frontier, the farthest
    cells; the cells at least `far_from` >= 1 moves away, empty if None), sets as bit rows [B, n]."""
    ecc = np.zeros(len(passable), np.int64)
    last, far = start.copy(), np.zeros_like(start)
    idx = np.arange(len(passable))
    front, free, reached = start, passable & ~start, np.zeros_like(start)
    d = 0
    while idx.size:
        d += 1
        nb = _grow(front, free)
        if far_from is not None and d >= far_from:
            reached |= nb
        dead = ~nb.any(1)
        if dead.any():  # these BFSs ended at d - 1: record them and drop them from the batch
            gone = idx[dead]
            ecc[gone], last[gone], far[gone] = d - 1, front[dead], reached[dead]
            live = ~dead
            idx, nb, free, reached = idx[live], nb[live], free[live], reached[live]
        free &= ~nb
        front = nb
    return ecc, last, far


def _bfs(passable: np.ndarray, source: np.ndarray, target: np.ndarray, keep: bool = False
         ) -> tuple[np.ndarray, np.ndarray | None]:
    """Moves from `source` to `target` (one cell each, bit rows [B, n]) within `passable`, -1 where
    unreachable; with keep, also the BFS layers [D + 1, B, n] (layer d = the cells d moves away)."""
    n = len(passable)
    dist = np.where((source & target).any(1), 0, -1)
    layers = [source.copy()]
    idx = np.flatnonzero(dist < 0)
    front, free, goal = source[idx], passable[idx] & ~source[idx], target[idx]
    d = 0
    while idx.size:
        d += 1
        nb = _grow(front, free)
        if keep:
            layer = np.zeros_like(source)
            layer[idx] = nb
            layers.append(layer)
        hit = (nb & goal).any(1)
        dist[idx[hit]] = d
        live = ~hit & nb.any(1)
        if not live.all():
            idx, nb, free, goal = idx[live], nb[live], free[live], goal[live]
        free &= ~nb
        front = nb
    return dist, (np.stack(layers) if keep and n else None)


def _trace(layers: np.ndarray, dist: np.ndarray, start: np.ndarray, size: int) -> np.ndarray:
    """bool [B, L]: the cells strictly between each start and the BFS source, walking from `start`
    down the layers (a BFS from the goal) to the first neighbour one move closer, in _STEPS order."""
    path = np.zeros((len(dist), size * size), bool)
    r, c, cur = start // size, start % size, dist.copy()
    while (act := np.flatnonzero(cur > 1)).size:
        rr, cc, below = r[act], c[act], cur[act] - 1
        nr, nc, found = rr.copy(), cc.copy(), np.zeros(act.size, bool)
        for dr, dc in _STEPS:
            tr, tc = rr + dr, cc + dc
            inside = (tr >= 0) & (tr < size) & (tc >= 0) & (tc < size)
            tr_, tc_ = np.minimum(np.maximum(tr, 0), size - 1), np.minimum(np.maximum(tc, 0), size - 1)
            bit = (layers[below, act, tr_] >> tc_.astype(np.uint64)) & _ONE
            hit = inside & (bit == 1) & ~found
            nr[hit], nc[hit] = tr[hit], tc[hit]
            found |= hit
        assert found.all(), "BFS layers without a predecessor"
        r[act], c[act] = nr, nc
        path[act, nr * size + nc] = True
        cur[act] -= 1
    return path


def _ends(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(one S and one G per row bool [B], S cell, G cell) of token rows [B, L]."""
    s, g = tokens == START, tokens == GOAL
    return (s.sum(1) == 1) & (g.sum(1) == 1), s.argmax(1), g.argmax(1)


def _shortest(tokens: np.ndarray, size: int, keep: bool = False):
    """BFS S -> G over the non-wall cells of token rows [B, L] with one S and one G each."""
    passable = _pack((tokens != WALL).reshape(-1, size, size))
    _, s, g = _ends(tokens)
    return _bfs(passable, _onehot(g, size), _onehot(s, size), keep)


def solve(inputs: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Mazes [L] or [B, L] (tokens, one S and one G each) -> (labels, shortest moves; -1 = unreachable).

    The label draws one shortest path as `o`: from S, always the first neighbour one move closer to G
    in the order up, down, left, right. An unreachable maze's label is the maze itself.
    """
    x = np.asarray(inputs)
    rows = x.reshape(-1, size * size).astype(np.uint8)
    if not _ends(rows)[0].all():
        raise RecurError("solve: every maze needs exactly one S and one G")
    dist, layers = _shortest(rows, size, keep=True)
    labels = rows.copy()
    if len(rows):
        ok = np.flatnonzero(dist > 0)
        path = _trace(layers[:, ok], dist[ok], _ends(rows[ok])[1], size)
        labels[ok] = np.where(path, PATH, rows[ok])
    return labels.reshape(x.shape), (dist if x.ndim > 1 else dist[0])


# --- generation -----------------------------------------------------------------------------------


def _pick(cells: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """One cell drawn uniformly from each non-empty set of bit rows [B, n] -> int [B]."""
    mask = _unpack(cells, size)
    return np.where(mask, rng.random(mask.shape), -1.0).argmax(1)


def _candidates(rng: np.random.Generator, size: int, n: int, min_path: int, wall_min: float, wall_max: float
                ) -> np.ndarray:
    """Inputs uint8 [k, L] from n random wall layouts: those with S and G >= min_path moves apart."""
    cells = size * size
    fraction = rng.uniform(wall_min, wall_max, n).astype(np.float32)
    u = rng.random((n, cells), np.float32)
    free = u >= fraction[:, None]
    root = u.argmax(1)  # open cells hold the largest u, i.i.d.: a uniform open cell (if there is one)
    passable = _pack(free.reshape(n, size, size))
    ecc, last, _ = _sweep(passable, _onehot(root, size))
    keep = np.flatnonzero(free.any(1) & (2 * ecc >= min_path))  # R's component is at most 2 * ecc across
    if not keep.size:
        return np.zeros((0, cells), np.uint8)
    a = _pick(last[keep], rng, size)
    ecc, _, far = _sweep(passable[keep], _onehot(a, size), min_path)
    ok = ecc >= min_path
    keep, a, far = keep[ok], a[ok], far[ok]
    if not keep.size:
        return np.zeros((0, cells), np.uint8)
    b = _pick(far, rng, size)
    swap = rng.random(keep.size) < 0.5
    start, goal = np.where(swap, b, a), np.where(swap, a, b)
    inputs = np.where(free[keep], OPEN, WALL).astype(np.uint8)
    rows = np.arange(keep.size)
    inputs[rows, start], inputs[rows, goal] = START, GOAL
    return inputs


def _generate_chunk(job: tuple) -> tuple[list[tuple[bytes, bytes, int]], int]:
    """Up to `want` mazes from chunk `index`'s own seed, and the candidates spent."""
    size, want, seed, index, min_path, wall_min, wall_max = job
    rng = np.random.default_rng(derive_seed(seed, f"maze chunk {index}"))
    found, total, spent, batch = [], 0, 0, 64
    while total < want and spent < _BUDGET:  # batches grow 64, 256, 1024, 2048: little waste when easy
        spent += batch
        found.append(_candidates(rng, size, batch, min_path, wall_min, wall_max)[: want - total])
        total += len(found[-1])
        batch = min(4 * batch, _BATCH)
    inputs = np.concatenate(found)
    labels, moves = solve(inputs, size)
    return [(i.tobytes(), lab.tobytes(), int(m)) for i, lab, m in zip(inputs, labels, moves)], spent


def generate(
    size: int,
    count: int,
    seed: int,
    min_path: int = 110,
    wall_min: float = 0.3,
    wall_max: float = 0.5,
    exclude: set[bytes] | None = None,
    *,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` distinct mazes: (inputs uint8 [count, L] tokens, labels, shortest moves int32 [count]).

    Each has a wall fraction drawn in [wall_min, wall_max] and a shortest S-G path of at least
    min_path moves (and at least 1). exclude holds inputs.tobytes() never to return. The output
    depends only on the arguments, not on `workers` (None = 2 processes for big jobs).
    """
    _check_size(size)
    _check_limits(size, min_path, wall_min, wall_max)
    cells = size * size
    if count <= 0:
        return np.zeros((0, cells), np.uint8), np.zeros((0, cells), np.uint8), np.zeros(0, np.int32)
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if count * cells >= _PARALLEL_CELLS else 1
    want = min(_CHUNK, count)
    max_chunks = 8 * -(-count // want) + 8
    jobs = ((size, want, seed, i, max(min_path, 1), wall_min, wall_max) for i in range(max_chunks))
    limits = f"min_path={min_path}, walls {wall_min:g}-{wall_max:g}"
    seen = set(exclude or ())
    rows: list[tuple[bytes, bytes, int]] = []
    spent = 0
    with closing(ordered_map(_generate_chunk, jobs, workers)) as results:
        for made, tried in results:
            spent += tried
            if not made and not rows:  # a later empty chunk is bad luck at a low acceptance rate
                raise RecurError(f"maze {size}x{size} generation: none of {tried} random mazes met {limits}; "
                                 "lower data.maze.min_path or change the wall fractions")
            for row in made:
                if row[0] not in seen:
                    seen.add(row[0])
                    rows.append(row)
            if len(rows) >= count:
                break
    if len(rows) < count:
        raise RecurError(f"maze {size}x{size} generation: found only {len(rows)} of {count} distinct mazes "
                         f"with {limits} in {spent} attempts; ask for fewer or lower data.maze.min_path")
    rows = rows[:count]
    inputs = np.frombuffer(b"".join(r[0] for r in rows), np.uint8).reshape(count, cells).copy()
    labels = np.frombuffer(b"".join(r[1] for r in rows), np.uint8).reshape(count, cells).copy()
    return inputs, labels, np.array([r[2] for r in rows], np.int32)


# --- checking answers -----------------------------------------------------------------------------

_PROBLEMS = {
    1: "the maze needs walls '#', open cells ' ', exactly one S and one G",
    2: "the answer changes a cell of the maze (only open cells may become 'o')",
    3: "the 'o' cells are not one unbroken path from S to G",
}


def _diagnose(inputs: np.ndarray, answers: np.ndarray, size: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per example of [B, L] tokens: (problem: 0 = a shortest path, keys of _PROBLEMS, 4 = a longer
    path; the answer's moves; the shortest moves, -1 if unreachable or the maze is malformed)."""
    x = np.asarray(inputs).reshape(-1, size * size).astype(np.int64)
    y = np.asarray(answers).reshape(-1, size * size).astype(np.int64)
    maze_ok = ((x >= WALL) & (x <= GOAL)).all(1) & _ends(x)[0]
    kept = np.where(x == OPEN, (y == OPEN) | (y == PATH), y == x).all(1)
    on = ((y == PATH) | (y == START) | (y == GOAL)).reshape(-1, size, size)
    degree = np.zeros(on.shape, np.int64)
    degree[:, 1:] += on[:, :-1]
    degree[:, :-1] += on[:, 1:]
    degree[:, :, 1:] += on[:, :, :-1]
    degree[:, :, :-1] += on[:, :, 1:]
    degree = degree.reshape(len(y), -1)
    need = np.select([y == PATH, (y == START) | (y == GOAL)], [2, 1], -1)
    # Degrees 1 at S and G and 2 on each 'o' make S's component a path ending at G; with exactly
    # `shortest - 1` 'o' cells nothing else fits beside it.
    shaped = np.where(need >= 0, degree == need, True).all(1)
    moves = (y == PATH).sum(1) + 1
    shortest = np.full(len(x), -1, np.int64)
    if maze_ok.any():
        shortest[maze_ok] = _shortest(x[maze_ok], size)[0]
    problem = np.select([~maze_ok, ~kept, ~shaped, moves != shortest], [1, 2, 3, 4], 0)
    return problem, moves, shortest


def are_shortest_paths(inputs: np.ndarray, answers: np.ndarray, size: int) -> np.ndarray:
    """bool [B]: each answer [B, L] keeps its maze's cells and draws one shortest S-G path as `o`."""
    return _diagnose(inputs, answers, size)[0] == 0


def is_shortest_path(inputs: np.ndarray, answer: np.ndarray, size: int) -> bool:
    """Whether `answer` keeps every wall, open cell, S and G of the maze `inputs` (tokens [L]) except
    open cells turned into `o`, and those form a simple 4-connected path from S to G whose number of
    moves is the BFS shortest distance (any shortest path counts, not only the label's)."""
    x, y = np.asarray(inputs).reshape(-1), np.asarray(answer).reshape(-1)
    if x.size != size * size or y.size != size * size:
        return False
    return bool(are_shortest_paths(x[None], y[None], size)[0])


def shortest_path_length(tokens: np.ndarray, size: int) -> int:
    """Moves of a shortest S-G path in a maze or label (tokens [L]; only walls block), -1 if unreachable."""
    t = np.asarray(tokens).reshape(-1)
    if t.size != size * size:
        raise RecurError(f"a {size}x{size} maze has {size * size} cells, got {t.size}")
    if not _ends(t[None])[0][0]:
        raise RecurError("the maze needs exactly one S and one G")
    return int(_shortest(t[None], size)[0][0])


# --- symmetries -----------------------------------------------------------------------------------


# --- text and files -------------------------------------------------------------------------------

_LUT = np.zeros(256, np.uint8)  # byte -> token; 0 marks a character that is no cell
_LUT[np.frombuffer(CHARS.encode(), np.uint8)] = np.arange(WALL, PATH + 1)
_CHARS = np.array(list("?" + CHARS + "?"))  # token (clipped to 0..6) -> character


def render(tokens: np.ndarray, size: int) -> str:
    """A maze or answer as text, one row per line: `# SGo`, and `?` for any other token."""
    t = np.asarray(tokens).reshape(-1).astype(np.int64)
    chars = _CHARS[np.clip(t, 0, 6)].reshape(size, size)
    return "\n".join("".join(row) for row in chars.tolist())


def parse_maze(text: str, size: int | None = None) -> np.ndarray:
    """Maze text -> input tokens uint8 [size * size].

    Either one line of size * size characters, or one line per row: rows shorter than the grid are
    filled with open cells (editors strip trailing spaces), so a rendered maze pasted back works.
    Characters: `#` wall, ` ` open, one `S`, one `G`.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    filled = [ln for ln in lines if ln]
    if not filled:
        raise RecurError("maze text is empty")
    if len(filled) == 1:  # the whole maze on one line
        line = filled[0]
        side = size or round(len(line) ** 0.5)
        if side * side != len(line):
            expected = f"{size * size} ({size}x{size})" if size else "a square number such as 900 (30x30)"
            raise RecurError(f"maze has {len(line)} cells, expected {expected}")
        grid = [line[r * side : (r + 1) * side] for r in range(side)]
    else:  # blank lines at the ends go while there are more lines than rows (size None: all of them)
        while len(lines) > (size or 0) and not lines[-1]:
            lines.pop()
        while len(lines) > (size or 0) and not lines[0]:
            lines.pop(0)
        side = size or len(lines)
        if len(lines) != side:
            raise RecurError(f"maze has {len(lines)} rows, expected {side}")
        if (wide := next((r for r, ln in enumerate(lines) if len(ln) > side), None)) is not None:
            raise RecurError(f"maze row {wide + 1} has {len(lines[wide])} cells, expected {side}")
        grid = [ln.ljust(side) for ln in lines]
    _check_size(side)
    for r, row in enumerate(grid):
        for c, ch in enumerate(row):
            if ch not in "# SG":
                if ch == "o":
                    raise RecurError(f"maze has a path cell 'o' at row {r + 1}, column {c + 1}; "
                                     "give the maze without its solution")
                raise RecurError(f"maze: bad character {ch!r} at row {r + 1}, column {c + 1}; "
                                 "use '#' for walls, spaces for open cells, one S and one G")
    flat = "".join(grid)
    for mark in "SG":
        if flat.count(mark) != 1:
            raise RecurError(f"maze needs exactly one {mark}, found {flat.count(mark)}")
    return _LUT[np.frombuffer(flat.encode(), np.uint8)]


def _csv_rows(rows: list[list[bytes]], fail, size: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Check CSV rows (see read_csv_blocks) -> (inputs, labels, moves, size)."""
    _, qs, answers, *_ = zip(*rows)
    if size is None:
        size = round(len(qs[0]) ** 0.5)
        if size * size != len(qs[0]) or not 2 <= size <= MAX_SIZE:
            raise fail(0, f"q has {len(qs[0])} cells, expected a square number such as 900 (30x30)")
    tokens = []
    for name, texts, top, allowed in (("q", qs, GOAL, "'#', ' ', 'S', 'G'"), ("a", answers, PATH, "'# SGo'")):
        raw = cell_bytes(texts, name, size, fail)
        t = _LUT[raw]
        if (bad := np.argwhere((t == 0) | (t > top))).size:
            r, c = bad[0]
            raise fail(r, f"{name} has bad character {chr(raw[r, c])!r} at row {c // size + 1}, "
                          f"column {c % size + 1} (expected {allowed})")
        tokens.append(t)
    q, a = tokens
    for mark, token in (("S", START), ("G", GOAL)):
        counts = (q == token).sum(1)
        if (bad := np.flatnonzero(counts != 1)).size:
            raise fail(bad[0], f"q needs exactly one {mark}, found {counts[bad[0]]}")
    problem, moves, shortest = _diagnose(q, a, size)
    if (bad := np.flatnonzero(problem)).size:
        i = bad[0]
        if problem[i] == 4:
            text = (f"the 'o' path in a has {moves[i]} moves, but the shortest has {shortest[i]}"
                    if shortest[i] >= 0 else "G cannot be reached from S")
        else:
            text = _PROBLEMS[problem[i]]
        raise fail(i, f"a is not a shortest path of q: {text}")
    return q, a, moves.astype(np.int32), size


def read_csv(path: str | Path, size: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a `source,q,a,rating` CSV of mazes -> (inputs, labels uint8 [n, L] tokens, moves int32 [n]).

    Every label must draw a shortest S-G path (checked by BFS). The size comes from the first row's
    q (size * size characters) and must equal `size` when given.
    """
    return read_csv_blocks(path, size, _csv_rows, "maze", keep_spaces=True)


# --- dataset --------------------------------------------------------------------------------------


def _symmetries(tokens: np.ndarray, size: int) -> np.ndarray:
    """Token rows [n, L] -> [n, 8, L]: the 8 dihedral images of each, the identity first."""
    grids = tokens.reshape(-1, size, size)
    return np.stack([dihedral(grids, k).reshape(len(tokens), -1) for k in range(8)], 1)


def _split(inputs: np.ndarray, labels: np.ndarray, moves: np.ndarray, augment: bool, size: int) -> Split:
    """Tokens and indices of one split; with augment each maze is a group of its 8 symmetries."""
    k = 8 if augment else 1
    total = len(inputs) * k
    if augment:
        inputs = _symmetries(inputs, size).reshape(total, -1)
        labels = _symmetries(labels, size).reshape(total, -1)
    return {
        "inputs": inputs.astype(np.uint8),
        "labels": labels.astype(np.uint8),
        "puzzle_ids": np.zeros(total, np.int32),  # one shared puzzle-embedding row, as in the reference
        "puzzle_index": np.arange(total + 1, dtype=np.int64),
        "group_index": np.arange(0, total + 1, k, dtype=np.int64),
        "path_lengths": np.repeat(moves.astype(np.int32), k),  # a symmetry keeps the path's length
    }


@dataclass
class MazeData:
    """Mazes as in Maze-Hard: random walls, BFS shortest path; or read from the HRM CSV layout."""

    size: int = 30
    """Grid side (seq_len = size*size)."""
    train_size: int = 1000
    """Training mazes (generated, or drawn from train_csv; 0 = every CSV row)."""
    test_size: int = 1000
    """Held-out mazes (generated, or drawn from test_csv; 0 = every CSV row)."""
    min_path: int = 110
    """Keep generated mazes whose shortest start-goal path has at least this many moves (Maze-Hard: 30x30, > 110)."""
    wall_min: float = 0.3
    """Each generated maze walls off a fraction of its cells drawn uniformly in [wall_min, wall_max]."""
    wall_max: float = 0.5
    """Upper end of the wall fraction."""
    dihedral: bool = False
    """Store the 8 rotations/reflections of each training maze (the reference builder's --aug; off there by default)."""
    train_csv: str = ""
    """Training CSV in the HRM layout (source,q,a,rating; characters `# SGo`) instead of generated mazes."""
    test_csv: str = ""
    """Test CSV in the same layout."""

    def check(self) -> None:
        """RecurError naming the first setting no dataset can be built from."""
        _check_size(self.size)
        check_csv_pair("maze", self.train_csv, self.test_csv)
        for key in ("train_size", "test_size"):
            if getattr(self, key) < 0:
                raise RecurError(f"data.maze.{key} must be >= 0, got {getattr(self, key)}")
        if not self.train_csv:  # generated mazes
            for key in ("train_size", "test_size"):
                if getattr(self, key) == 0:
                    raise RecurError(f"data.maze.{key} must be > 0 for generated mazes (0 = all CSV rows)")
            _check_limits(self.size, self.min_path, self.wall_min, self.wall_max)


def build_splits(cfg: MazeData, seed: int) -> tuple[dict[str, Split], dict]:
    """({"train": split, "test": split}, info) from the maze settings; byte-identical per (cfg, seed)."""
    cfg.check()
    size = cfg.size
    if cfg.train_csv:
        train = subsample(read_csv(cfg.train_csv, size), cfg.train_size, derive_seed(seed, "train rows"))
        test = subsample(read_csv(cfg.test_csv, size), cfg.test_size, derive_seed(seed, "test rows"))
    else:
        limits = (cfg.min_path, cfg.wall_min, cfg.wall_max)
        train = generate(size, cfg.train_size, derive_seed(seed, "train"), *limits)
        # No test maze may be any symmetry of a training maze, augmented or not.
        seen = {row.tobytes() for row in _symmetries(train[0], size).reshape(-1, size * size)}
        test = generate(size, cfg.test_size, derive_seed(seed, "test"), *limits, exclude=seen)
    splits = {"train": _split(*train, cfg.dihedral, size), "test": _split(*test, False, size)}
    info = {"vocab_size": VOCAB_SIZE, "seq_len": size * size, "num_puzzle_ids": 1, "size": size}
    return splits, info


class Maze(Task):
    """Mazes as a recur task: generated or CSV mazes, tokens as in the reference HRM/TRM Maze-Hard data."""

    name = "maze"
    config = MazeData

    def build(self, cfg: MazeData, seed: int) -> tuple[dict[str, Split], dict]:
        return build_splits(cfg, seed)

    def parse(self, text: str, info: dict) -> np.ndarray:
        return parse_maze(text, info["size"])

    def read_puzzles(self, path: Path, info: dict) -> list[tuple[int, str]]:
        """The q column of a `source,q,a,rating` CSV; else lines of size * size characters, one maze
        each; else the whole file is one maze drawn one row per line."""
        lines = read_lines(path)
        text = "\n".join(lines)
        numbered = [(n, ln) for n, ln in enumerate(lines, 1) if ln.strip()]
        if (mazes := csv_q_column(path, numbered)) is not None:
            return mazes
        cells = info["size"] ** 2
        if numbered and all(len(ln) == cells for _, ln in numbered):
            return numbered
        return [(numbered[0][0], text)] if numbered else []

    def render(self, tokens: np.ndarray, info: dict) -> str:
        return render(tokens, info["size"])

    def verify(self, inputs: np.ndarray, answer: np.ndarray, info: dict) -> bool:
        return is_shortest_path(inputs, answer, info["size"])

    def score(self, inputs: np.ndarray, labels: np.ndarray, answers: np.ndarray, info: dict
              ) -> dict[str, np.ndarray]:
        valid = are_shortest_paths(inputs, answers, info["size"])
        return {"valid_shortest_path": valid.astype(np.float64)}
