"""Maze task: generator, shortest-path checks, symmetries, parsing, CSV I/O, dataset splits and the Task."""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recur.tasks.maze import MazeData
from recur.errors import RecurError
from recur.tasks import maze as mz

TOKEN = {"#": 1, " ": 2, "S": 3, "G": 4, "o": 5}

# 5x5, no walls: S top-left, G two right and two down -> 4 moves, 6 shortest paths.
OPEN_5 = ["S    ", "     ", "  G  ", "     ", "     "]
# A wall splits the grid: the only way round is through the gap on the right.
WALLED = ["S    ", "#### ", "G    ", "     ", "     "]


def tokens(rows: list[str]) -> np.ndarray:
    return np.array([TOKEN[ch] for ch in "".join(rows)], np.uint8)


def bfs(grid: np.ndarray, size: int) -> int:
    """Moves from S to G through non-wall cells, -1 if unreachable (written independently of recur)."""
    g = grid.reshape(size, size)
    start = tuple(np.argwhere(g == 3)[0])
    goal = tuple(np.argwhere(g == 4)[0])
    dist = {start: 0}
    todo = deque([start])
    while todo:
        r, c = todo.popleft()
        if (r, c) == goal:
            return dist[r, c]
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= nr < size and 0 <= nc < size and g[nr, nc] != 1 and (nr, nc) not in dist:
                dist[nr, nc] = dist[r, c] + 1
                todo.append((nr, nc))
    return -1


def walk(label: np.ndarray, size: int) -> int:
    """Moves of the path S -> o ... o -> G drawn in a label, stepping to the one unvisited path cell;
    -1 unless it reaches G using every `o` exactly once."""
    g = label.reshape(size, size)
    cur = tuple(np.argwhere(g == 3)[0])
    seen = {cur}
    moves = 0
    while g[cur] != 4:
        r, c = cur
        steps = [(nr, nc) for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1))
                 if 0 <= nr < size and 0 <= nc < size and g[nr, nc] in (4, 5) and (nr, nc) not in seen]
        if len(steps) != 1 and not any(g[s] == 4 for s in steps):
            return -1
        cur = next((s for s in steps if g[s] == 4), steps[0] if steps else None)
        seen.add(cur)
        moves += 1
    return moves if moves - 1 == (g == 5).sum() else -1


@cache
def sample(size: int = 10, count: int = 24, seed: int = 7, min_path: int = 14):
    return mz.generate(size, count, seed, min_path, workers=1)


def csv_text(inputs: np.ndarray, labels: np.ndarray, ratings: list[str] | None = None) -> str:
    chars = np.array(list("?" + mz.CHARS))
    rows = [mz.CSV_HEADER]
    for i, (q, a) in enumerate(zip(inputs, labels)):
        rating = ratings[i] if ratings else str(i)
        rows.append(f"gen{i},{''.join(chars[q])},{''.join(chars[a])},{rating}")
    return "\n".join(rows) + "\n"


# --- generation -----------------------------------------------------------------------------------


def test_generated_mazes_are_well_formed_and_labelled_with_a_shortest_path():
    size, min_path = 10, 14
    inputs, labels, moves = sample(size, min_path=min_path)
    cells = size * size
    assert inputs.shape == labels.shape == (24, cells) and inputs.dtype == labels.dtype == np.uint8
    assert moves.dtype == np.int32 and (moves >= min_path).all()
    assert len({x.tobytes() for x in inputs}) == 24
    assert inputs.min() >= 1 and inputs.max() <= 4 and labels.min() >= 1 and labels.max() <= 5
    for x, y, m in zip(inputs, labels, moves):
        assert (x == 3).sum() == 1 and (x == 4).sum() == 1
        assert np.array_equal(np.where(y == 5, 2, y), x)  # only open cells became path cells
        assert bfs(x, size) == m == walk(y, size)
    assert mz.are_shortest_paths(inputs, labels, size).all()


def test_generate_is_deterministic_and_ignores_the_worker_count():
    one = mz.generate(8, 40, 3, 9, workers=1)
    two = mz.generate(8, 40, 3, 9, workers=2)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(one, two))
    other = mz.generate(8, 40, 4, 9, workers=1)
    assert one[0].tobytes() != other[0].tobytes()


def test_generate_never_returns_excluded_mazes():
    first, _, _ = sample()
    banned = {x.tobytes() for x in first[:10]}
    again, labels, _ = mz.generate(10, 24, 7, 14, exclude=banned, workers=1)
    produced = {x.tobytes() for x in again}
    assert len(produced) == 24 and not produced & banned
    assert mz.are_shortest_paths(again, labels, 10).all()


def test_generate_wall_fractions():
    inputs, _, moves = mz.generate(9, 6, 1, 0, wall_min=0.0, wall_max=0.0, workers=1)
    assert not (inputs == 1).any()  # no walls: the shortest path is the Manhattan distance
    s, g = np.argwhere(inputs == 3)[:, 1], np.argwhere(inputs == 4)[:, 1]
    assert moves.tolist() == (abs(s // 9 - g // 9) + abs(s % 9 - g % 9)).tolist()
    dense, _, _ = mz.generate(12, 30, 1, 4, wall_min=0.4, wall_max=0.45, workers=1)
    walls = (dense == 1).mean(1)
    assert 0.3 < walls.mean() < 0.45 and walls.max() < 0.6


def test_generate_gives_up_on_impossible_filters():
    with pytest.raises(RecurError, match="min_path=30") as error:
        mz.generate(6, 2, 0, min_path=30, workers=1)  # 6x6 random walls never make 30-move paths
    assert "\n" not in str(error.value)
    with pytest.raises(RecurError, match="min_path must be in 0..35"):
        mz.generate(6, 2, 0, min_path=36)
    with pytest.raises(RecurError, match="wall_min"):
        mz.generate(6, 2, 0, 2, wall_min=0.6, wall_max=0.5)
    with pytest.raises(RecurError, match="maze size must be 2..64"):
        mz.generate(65, 1, 0, 2)


# --- checking answers -----------------------------------------------------------------------------


def test_solve_and_shortest_path_length_on_hand_made_mazes():
    x = tokens(WALLED)
    assert mz.shortest_path_length(x, 5) == bfs(x, 5) == 10
    label, moves = mz.solve(x, 5)
    assert moves == 10 and mz.is_shortest_path(x, label, 5) and walk(label, 5) == 10
    assert mz.shortest_path_length(label, 5) == 10  # path cells do not block
    shut = tokens(["S   #", "#####", "G    ", "     ", "     "])
    assert mz.shortest_path_length(shut, 5) == -1
    assert np.array_equal(mz.solve(shut, 5)[0], shut)
    assert not mz.is_shortest_path(shut, shut, 5)
    with pytest.raises(RecurError, match="exactly one S and one G"):
        mz.shortest_path_length(tokens(["S    "] * 5), 5)


def test_is_shortest_path_accepts_any_shortest_path():
    x = tokens(OPEN_5)
    label, moves = mz.solve(x, 5)
    assert moves == 4 and mz.is_shortest_path(x, label, 5)
    right_then_down = tokens(["Soo  ", "  o  ", "  G  ", "     ", "     "])
    down_then_right = tokens(["S    ", "o    ", "ooG  ", "     ", "     "])
    zigzag = tokens(["So   ", " oo  ", "  G  ", "     ", "     "])
    for answer in (right_then_down, down_then_right, zigzag):
        assert mz.is_shortest_path(x, answer, 5)


@pytest.mark.parametrize(
    "answer",
    [
        ["Sooo ", "   o ", "  Go ", "     ", "     "],  # a detour: 6 moves
        ["So   ", "  o  ", "  G  ", "     ", "     "],  # broken
        ["Soo  ", "  o  ", "  G  ", "     ", "    o"],  # an extra stray cell
        ["Soo  ", "  o  ", "  G  ", "   oo", "   oo"],  # a detached loop besides the path
        ["S    ", "     ", "  G  ", "     ", "     "],  # no path at all
        ["Soo  ", "  o  ", "  G  ", "     ", "    #"],  # a wall added
        ["oSo  ", "  o  ", "  G  ", "     ", "     "],  # S moved
    ],
)
def test_is_shortest_path_rejects_wrong_answers(answer):
    assert not mz.is_shortest_path(tokens(OPEN_5), tokens(answer), 5)


def test_is_shortest_path_rejects_walls_crossed_or_removed():
    x = tokens(WALLED)
    through = tokens(["Sooo ", "o### ", "G    ", "     ", "     "])  # a wall cell turned into path
    assert not mz.is_shortest_path(x, through, 5)
    label = mz.solve(x, 5)[0]
    opened = label.copy()
    opened[5] = 2  # a wall turned open
    assert not mz.is_shortest_path(x, opened, 5)
    padded = label.copy()
    padded[0] = 0
    assert not mz.is_shortest_path(x, padded, 5)
    assert not mz.is_shortest_path(x, label[:-1], 5)


def test_are_shortest_paths_flags_each_row():
    inputs, labels, _ = sample()
    answers = labels.copy()
    answers[1][answers[1] == 5] = 2  # path erased
    answers[2][np.flatnonzero(labels[2] == 5)[0]] = 2  # path broken
    answers[3][np.flatnonzero(inputs[3] == 1)[0]] = 5  # a wall painted
    assert mz.are_shortest_paths(inputs[:5], answers[:5], 10).tolist() == [True, False, False, False, True]


# --- symmetries -----------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 7), k=st.integers(0, 7), seed=st.integers(0, 2**32 - 1))
def test_dihedral_round_trip(n, k, seed):
    grid = np.random.default_rng(seed).integers(0, 6, (3, n, n)).astype(np.uint8)
    out = mz.dihedral(grid, k)
    assert out.shape == grid.shape and out.flags.c_contiguous
    assert np.array_equal(mz.dihedral_inverse(out, k), grid)
    assert np.array_equal(mz.dihedral(out, mz.DIHEDRAL_INVERSE[k]), grid)
    assert np.array_equal(np.sort(out, axis=None), np.sort(grid, axis=None))


def test_dihedral_gives_eight_distinct_symmetries():
    grid = np.arange(9).reshape(3, 3)
    images = {mz.dihedral(grid, k).tobytes() for k in range(8)}
    assert len(images) == 8 and np.array_equal(mz.dihedral(grid, 0), grid)
    assert np.array_equal(mz.dihedral(grid, 1), np.rot90(grid))
    assert np.array_equal(mz.dihedral(grid, 4), grid.T)
    with pytest.raises(ValueError):
        mz.dihedral(grid, 8)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_dihedral_keeps_shortest_paths(seed):
    inputs, labels, moves = mz.generate(7, 1, seed, 8, workers=1)
    x, y = inputs[0].reshape(7, 7), labels[0].reshape(7, 7)
    for k in range(8):
        tx, ty = mz.dihedral(x, k).reshape(-1), mz.dihedral(y, k).reshape(-1)
        assert mz.is_shortest_path(tx, ty, 7)
        assert bfs(tx, 7) == moves[0]


# --- text and files -------------------------------------------------------------------------------


def test_render_and_parse_round_trip():
    inputs, labels, _ = sample()
    text = mz.render(labels[0], 10)
    assert len(text.splitlines()) == 10 and set(text) <= set(mz.CHARS + "\n") and "o" in text
    shown = mz.render(inputs[0], 10)
    assert np.array_equal(mz.parse_maze(shown, 10), inputs[0])
    assert np.array_equal(mz.parse_maze(shown), inputs[0])  # size from the row count
    stripped = "\n".join(line.rstrip() for line in shown.splitlines()) + "\n"  # as an editor saves it
    assert np.array_equal(mz.parse_maze(stripped, 10), inputs[0])
    one_line = shown.replace("\n", "")
    assert np.array_equal(mz.parse_maze(one_line, 10), inputs[0])
    assert np.array_equal(mz.parse_maze(one_line + "\n"), inputs[0])
    assert mz.render(np.array([0, 1, 2, 9]), 2) == "?#\n ?"


@pytest.mark.parametrize(
    ("text", "size", "message"),
    [
        ("S" + " " * 14 + "G", 5, r"^maze has 16 cells, expected 25 \(5x5\)$"),
        ("S" + " " * 13 + "G", None, "maze has 15 cells, expected a square number"),
        ("\n".join(["S    ", "    o", "  G  ", "     ", "     "]), 5, "path cell 'o' at row 2, column 5"),
        ("S" + " " * 7 + "x" + "G" + " " * 6, 4, r"bad character 'x' at row 3, column 1"),
        ("SS" + " " * 13 + "G", 4, "exactly one S, found 2"),
        ("S" + " " * 15, 4, "exactly one G, found 0"),
        ("\n".join(["S  ", "   ", " G ", "   "]), 3, "maze has 4 rows, expected 3"),
        ("\n".join(["S  ", "    ", " G "]), 3, "maze row 2 has 4 cells, expected 3"),
        ("   \n\n", None, "maze has 3 cells, expected a square number"),
        ("", 5, "maze text is empty"),
    ],
)
def test_parse_maze_errors_name_the_problem(text, size, message):
    with pytest.raises(RecurError, match=message) as error:
        mz.parse_maze(text, size)
    assert "\n" not in str(error.value)


def test_read_csv_round_trip(tmp_path):
    inputs, labels, moves = sample()
    path = tmp_path / "mazes.csv"
    path.write_text(csv_text(inputs, labels))
    q, a, m = mz.read_csv(path)
    assert np.array_equal(q, inputs) and np.array_equal(a, labels) and np.array_equal(m, moves)
    assert m.dtype == np.int32
    # The 3-column layout: a is last, and its trailing open cells must survive.
    lines = csv_text(inputs, labels).splitlines()
    short = ["source,q,a"] + [line.rsplit(",", 1)[0] for line in lines[1:]]
    path.write_text("\r\n".join(short) + "\r\n\r\n")
    q, a, _ = mz.read_csv(path, size=10)
    assert np.array_equal(q, inputs) and np.array_equal(a, labels)
    with pytest.raises(RecurError, match=r"q has 100 cells, expected 64 \(8x8\)"):
        mz.read_csv(path, size=8)


def edit(row: str, column: int, change) -> str:
    """The CSV row with column 1 (q) or 2 (a) replaced by change(text)."""
    fields = row.split(",")
    fields[column] = change(fields[column])
    return ",".join(fields)


def put(text: str, cell: int, ch: str) -> str:
    return text[:cell] + ch + text[cell + 1 :]


def first(text: str, ch: str) -> int:
    return text.index(ch)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda row: row + ",7", "has 5 columns, expected 4"),
        (lambda row: edit(row, 1, lambda q: q + "#"), r"q has 101 cells, expected 100 \(10x10\)"),
        (lambda row: edit(row, 2, lambda a: a[:-1]), "a has 99 cells, expected 100"),
        (lambda row: edit(row, 1, lambda q: put(q, 12, "x")), "q has bad character 'x' at row 2, column 3"),
        (lambda row: edit(row, 1, lambda q: put(q, first(q, " "), "o")), "q has bad character 'o'"),
        (lambda row: edit(row, 2, lambda a: put(a, 0, "*")), r"a has bad character '\*' at row 1, column 1"),
        (lambda row: edit(row, 1, lambda q: put(q, first(q, " "), "S")), "q needs exactly one S, found 2"),
        (lambda row: edit(row, 1, lambda q: q.replace("G", " ")), "q needs exactly one G, found 0"),
        (lambda row: edit(row, 2, lambda a: put(a, first(a, "o"), " ")), "not one unbroken path"),
        (lambda row: edit(row, 2, lambda a: put(a, first(a, "#"), " ")), "changes a cell of the maze"),
        (lambda row: edit(row, 2, lambda a: a.replace("o", " ")), "not one unbroken path"),
    ],
)
def test_read_csv_errors_name_file_and_line(tmp_path, corrupt, message):
    inputs, labels, _ = sample()
    lines = csv_text(inputs[:4], labels[:4]).splitlines()
    lines[3] = corrupt(lines[3])
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecurError, match=message) as error:
        mz.read_csv(path)
    assert "bad.csv line 4:" in str(error.value) and "\n" not in str(error.value)


def test_read_csv_rejects_longer_paths_bad_headers_and_missing_files(tmp_path):
    x = "".join(OPEN_5)
    detour = "".join(["Sooo ", "   o ", "  Go ", "     ", "     "])
    path = tmp_path / "x.csv"
    path.write_text(f"{mz.CSV_HEADER}\nmine,{x},{detour},\n")
    with pytest.raises(RecurError, match="x.csv line 2: .* has 6 moves, but the shortest has 4"):
        mz.read_csv(path)
    path.write_text("id,maze\n")
    with pytest.raises(RecurError, match="line 1: header"):
        mz.read_csv(path)
    path.write_text(mz.CSV_HEADER + "\n")
    with pytest.raises(RecurError, match="no maze rows"):
        mz.read_csv(path)
    with pytest.raises(RecurError, match="nope.csv"):
        mz.read_csv(tmp_path / "nope.csv")


# --- dataset and task -----------------------------------------------------------------------------


def small_cfg(**changes) -> MazeData:
    return replace(MazeData(size=8, train_size=6, test_size=5, min_path=9), **changes)


@pytest.mark.parametrize("dihedral", [False, True])
def test_build_splits_layout(dihedral):
    splits, info = mz.build_splits(small_cfg(dihedral=dihedral), seed=1)
    assert info == {"vocab_size": 6, "seq_len": 64, "num_puzzle_ids": 1, "size": 8}
    train, test = splits["train"], splits["test"]
    group = 8 if dihedral else 1
    assert train["inputs"].shape == train["labels"].shape == (6 * group, 64)
    assert test["inputs"].shape == (5, 64)
    for split, k in ((train, group), (test, 1)):
        n = len(split["inputs"])
        assert split["inputs"].dtype == split["labels"].dtype == np.uint8
        assert split["inputs"].min() >= 1 and split["inputs"].max() <= 4
        assert split["labels"].min() >= 1 and split["labels"].max() <= 5
        assert split["puzzle_ids"].dtype == np.int32 and not split["puzzle_ids"].any()
        assert split["puzzle_index"].tolist() == list(range(n + 1))
        assert split["group_index"].tolist() == list(range(0, n + 1, k))
        assert split["path_lengths"].dtype == np.int32 and (split["path_lengths"] >= 9).all()
        assert mz.are_shortest_paths(split["inputs"], split["labels"], 8).all()
        assert [bfs(x, 8) for x in split["inputs"]] == split["path_lengths"].tolist()
    bases = train["inputs"][::group]
    if dihedral:  # each group: its base maze and the other 7 symmetries of it
        for g in range(6):
            images = {mz.dihedral(bases[g].reshape(8, 8), k).tobytes() for k in range(8)}
            members = train["inputs"][8 * g : 8 * g + 8]
            assert {m.reshape(8, 8).tobytes() for m in members} == images
            assert np.array_equal(members[3], mz.dihedral(bases[g].reshape(8, 8), 3).reshape(-1))
    every = {mz.dihedral(b.reshape(8, 8), k).tobytes() for b in bases for k in range(8)}
    assert not every & {x.reshape(8, 8).tobytes() for x in test["inputs"]}


def test_build_splits_test_excludes_every_symmetry_of_a_training_maze():
    # 3x3 with 5-move paths: only 64 distinct mazes, so a test maze would often repeat a training one.
    for seed in range(3):
        splits, _ = mz.build_splits(MazeData(size=3, train_size=6, test_size=6, min_path=5), seed=seed)
        train = splits["train"]["inputs"].reshape(-1, 3, 3)
        seen = {mz.dihedral(x, k).tobytes() for x in train for k in range(8)}
        assert len({x.tobytes() for x in splits["test"]["inputs"]}) == 6
        assert not seen & {x.reshape(3, 3).tobytes() for x in splits["test"]["inputs"]}


def test_build_splits_is_deterministic():
    a, _ = mz.build_splits(small_cfg(dihedral=True), seed=3)
    b, _ = mz.build_splits(small_cfg(dihedral=True), seed=3)
    c, _ = mz.build_splits(small_cfg(dihedral=True), seed=4)
    for split in ("train", "test"):
        assert a[split].keys() == b[split].keys()
        assert all(a[split][k].tobytes() == b[split][k].tobytes() for k in a[split])
    assert a["train"]["inputs"].tobytes() != c["train"]["inputs"].tobytes()


def test_build_splits_from_csv(tmp_path):
    inputs, labels, moves = sample()
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text(csv_text(inputs[:8], labels[:8]))
    test.write_text(csv_text(inputs[8:11], labels[8:11]))
    cfg = replace(MazeData(size=10, train_size=5, test_size=0, dihedral=True), train_csv=str(train),
                  test_csv=str(test))
    splits, info = mz.build_splits(cfg, seed=0)
    bases = splits["train"]["inputs"][::8]
    assert info["seq_len"] == 100 and len(bases) == 5
    picked = [next(i for i in range(8) if np.array_equal(b, inputs[i])) for b in bases]
    assert picked == sorted(picked)  # file order kept
    assert np.array_equal(splits["test"]["inputs"], inputs[8:11])
    assert np.array_equal(splits["test"]["labels"], labels[8:11])
    assert splits["test"]["path_lengths"].tolist() == moves[8:11].tolist()
    with pytest.raises(RecurError, match="train_csv and test_csv"):
        mz.build_splits(replace(cfg, test_csv=""), seed=0)
    with pytest.raises(RecurError, match=r"expected 64 \(8x8\)"):
        mz.build_splits(replace(cfg, size=8), seed=0)
    with pytest.raises(RecurError, match="train_size must be > 0"):
        mz.build_splits(small_cfg(train_size=0), seed=0)


def test_score_marks_valid_shortest_paths():
    task = mz.Maze()
    x = tokens(OPEN_5)
    label = mz.solve(x, 5)[0]
    other = tokens(["S    ", "o    ", "ooG  ", "     ", "     "])
    detour = tokens(["Sooo ", "   o ", "  Go ", "     ", "     "])
    padded = np.zeros(25, np.uint8)
    inputs = np.stack([x, x, x, x]).astype(np.int32)
    labels = np.stack([label] * 4).astype(np.int32)
    answers = np.stack([label, other, detour, padded]).astype(np.int64)
    info = {"vocab_size": 6, "seq_len": 25, "num_puzzle_ids": 1, "size": 5}
    score = task.score(inputs, labels, answers, info)
    assert list(score) == ["valid_shortest_path"]
    assert score["valid_shortest_path"].dtype == np.float64
    assert score["valid_shortest_path"].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_task_parse_read_render_verify(tmp_path):
    task = mz.Maze()
    assert task.name == "maze"
    info = {"vocab_size": 6, "seq_len": 64, "num_puzzle_ids": 1, "size": 8}
    splits, built = task.build(small_cfg(train_size=2, test_size=1, dihedral=True), seed=0)
    assert built == info and len(splits["train"]["inputs"]) == 16
    x, y = splits["test"]["inputs"][0], splits["test"]["labels"][0]
    text = task.render(x, info)
    assert np.array_equal(task.parse(text, info), x) and task.parse(text, info).dtype == np.uint8
    assert task.verify(x, y, info) and not task.verify(x, x, info)

    grid = tmp_path / "maze.txt"
    grid.write_text(text + "\n")
    assert [np.array_equal(task.parse(t, info), x) for _, t in task.read_puzzles(grid, info)] == [True]
    lines = tmp_path / "mazes.txt"
    flat = text.replace("\n", "")
    lines.write_text(f"{flat}\n\n{flat}\n")
    assert [t for _, t in task.read_puzzles(lines, info)] == [flat, flat]
    listed = tmp_path / "mazes.csv"
    listed.write_text(csv_text(splits["test"]["inputs"], splits["test"]["labels"]))
    assert [t for _, t in task.read_puzzles(listed, info)] == [flat]
    with pytest.raises(RecurError, match="missing.txt"):
        task.read_puzzles(tmp_path / "missing.txt", info)
