"""The compact prepared ARC dataset, and the examples of a batch made when it is drawn.

The reference writes every augmented, translated example (about 4M x 900 tokens per array for
ARC-AGI-1 with K=1000, ~3.6 GB each). Here a split keeps each task's pairs once and one row per
augmented task (puzzle); tokens are made (augment, translate, encode) for the rows of a batch only.
Files of a split, besides recur.data's puzzle_ids / puzzle_index / group_index:

  grids            uint8 [G, S, S]  every grid of the split once, colours at the top-left (S = canvas side)
  grid_shape       uint8 [G, 2]     its (height, width)
  pair_input       int32 [Q]        the input grid of each pair
  pair_output      int32 [Q]        its output grid (-1: a test input whose solution is unknown)
  pair_index       int32 [Q]        the pair's position in its task's demonstrations followed by its
                                    test pairs (train split), or in its test pairs (test split)
  puzzle_task      int32 [P]        the task of each puzzle: a row of task_ids
  puzzle_aug       int32 [P]        its augmentation index (0 = the task as given)
  puzzle_dihedral  uint8 [P]        the augmentation: symmetry id (recur.tasks.common.dihedral) ...
  puzzle_colours   uint8 [P, 10]    ... and colour map (colour c -> puzzle_colours[c], 0 -> 0)
  puzzle_pair      int64 [P]        the pair of the puzzle's first example; example k is puzzle_pair + k
  task_ids         str [T]          every task of the dataset (both splits use the same rows)

Groups are tasks, puzzles are augmented tasks (one puzzle id each, the same in both splits), and
a puzzle's examples are all its task's pairs of that split: in train the demonstrations (plus the
test pairs of training tasks), in test the test inputs of the test tasks, every augmented version
of each (for voting). Example e of the test split is (task puzzle_task[p], test input
pair_index[pair], augmentation puzzle_aug[p]); `ArcExamples.describe` gives that map.

Translation (training examples only, when a batch is drawn with its epochs): each example's input
and output share a top-left offset drawn uniformly where both fit; one example per (puzzle, epoch)
stays at (0, 0), as one per puzzle does in the reference. Every offset is a hash of (seed, epoch,
example), so a resumed run draws the same ones. Test grids are always at (0, 0).

Deliberate differences from the reference builder and sampler:
- Offsets are drawn again every epoch; the reference draws each example's offset once, when it
  writes the dataset, and the example kept at (0, 0) is then one per puzzle for all of training.
- Task order is the sources' order and puzzle ids are numbered task by task; the reference shuffles
  each subset with its global RNG first. So are the augmentations: drawn per (seed, task id) here,
  from one global stream across tasks there (where adding a task changes every later task's).
- The epoch scheme is the reference's (shuffle the groups, one puzzle per group, all its examples);
  recur.data.TrainSampler's own differences hold (epochs run on without dropping a partial batch,
  every draw is a function of (seed, epoch)).
- A challenges file without solutions: the reference fills every missing test output with [[0]]
  and trains (and scores) on it; here such a training task trains its demonstrations only, and a
  test task can be voted on and submitted but not scored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import RecurError
from .augment import SWAPS_SIDES, source_cells
from .grids import COLOUR0, EOS
from .sources import ArcTask

FILES = ("grids", "grid_shape", "pair_input", "pair_output", "pair_index", "puzzle_task", "puzzle_aug",
         "puzzle_dihedral", "puzzle_colours", "puzzle_pair", "task_ids")


def _split_arrays(rows: list[int], pairs: list[list[tuple]], tables: list, side: int, first_id: np.ndarray,
                  task_ids: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays of one split: task rows[i] of task_ids with its (index, input, output) pairs[i]."""
    grids, shapes, pin, pout, pidx = [], [], [], [], []

    def add(grid) -> int:
        canvas = np.zeros((side, side), np.uint8)
        canvas[:grid.shape[0], :grid.shape[1]] = grid
        grids.append(canvas)
        shapes.append(grid.shape)
        return len(grids) - 1

    first_pair, counts = [], []
    for task_pairs in pairs:
        first_pair.append(len(pin))
        counts.append(len(task_pairs))
        for index, x, y in task_pairs:
            pin.append(add(x))
            pout.append(-1 if y is None else add(y))
            pidx.append(index)
    n_aug = np.array([len(tables[r][0]) for r in rows], np.int64)
    task_of_puzzle = np.repeat(np.array(rows, np.int64), n_aug)
    aug = np.arange(n_aug.sum()) - np.repeat(np.cumsum(n_aug) - n_aug, n_aug)
    examples = np.repeat(np.array(counts, np.int64), n_aug)
    return {
        "puzzle_ids": (first_id[task_of_puzzle] + aug).astype(np.int32),
        "puzzle_index": np.concatenate([[0], np.cumsum(examples)]).astype(np.int64),
        "group_index": np.concatenate([[0], np.cumsum(n_aug)]).astype(np.int64),
        "grids": np.array(grids, np.uint8).reshape(-1, side, side),
        "grid_shape": np.array(shapes, np.uint8).reshape(-1, 2),
        "pair_input": np.array(pin, np.int32), "pair_output": np.array(pout, np.int32),
        "pair_index": np.array(pidx, np.int32),
        "puzzle_task": task_of_puzzle.astype(np.int32), "puzzle_aug": aug.astype(np.int32),
        "puzzle_dihedral": np.concatenate([tables[r][0] for r in rows]) if rows else np.zeros(0, np.uint8),
        "puzzle_colours": (np.concatenate([tables[r][1] for r in rows]) if rows else np.zeros((0, 10), np.uint8)),
        "puzzle_pair": np.repeat(np.array(first_pair, np.int64), n_aug),
        "task_ids": task_ids,
    }


def build(train_tasks: list[ArcTask], test_tasks: list[ArcTask], tables: list, side: int
          ) -> tuple[dict[str, dict[str, np.ndarray]], int]:
    """Both splits with the reference's assignment: every pair of a training task, and the demonstrations
    of a test task, go to train; the test tasks' test pairs go to test. `tables[t]` is the augmentation
    table of task t of train_tasks + test_tasks. Returns the splits and the number of puzzle ids
    (id 0 is the blank; augmented task (t, a) has id first_id[t] + a)."""
    tasks = train_tasks + test_tasks
    n_aug = np.array([len(t[0]) for t in tables], np.int64)
    first_id = 1 + np.concatenate([[0], np.cumsum(n_aug)[:-1]]).astype(np.int64)
    task_ids = np.array([t.id for t in tasks]) if tasks else np.zeros(0, "<U1")
    n_train = len(train_tasks)
    train_pairs = [[(i, x, y) for i, (x, y) in enumerate(t.train)]
                   + ([(len(t.train) + i, x, y) for i, (x, y) in enumerate(t.test) if y is not None]
                      if r < n_train else [])
                   for r, t in enumerate(tasks)]
    test_pairs = [[(i, x, y) for i, (x, y) in enumerate(t.test)] for t in test_tasks]
    splits = {
        "train": _split_arrays(list(range(len(tasks))), train_pairs, tables, side, first_id, task_ids),
        "test": _split_arrays(list(range(n_train, len(tasks))), test_pairs, tables, side, first_id,
                              task_ids),
    }
    return splits, int(1 + n_aug.sum())


_M1, _M2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic): a counter-based random stream."""
    z = x + _GOLD
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def draw_hash(seed: int, epochs: np.ndarray, keys: np.ndarray, purpose: int) -> np.ndarray:
    """uint64 [b]: a hash of (seed, epoch, key, purpose) per row."""
    x = _mix(np.full(len(keys), (seed * 4 + purpose) & (2**64 - 1), np.uint64))
    x = _mix(x ^ np.asarray(epochs).astype(np.uint64))
    return _mix(x ^ np.asarray(keys).astype(np.uint64))


class ArcExamples:
    """A split's examples, made when a batch is drawn (the recur.data.Split hook of batch-time tasks)."""

    def __init__(self, path: Path, split, info: dict):
        self.split, self.side, self.translate = split, int(info["side"]), bool(info["translate"]) and split.name == "train"
        try:
            self.a = {k: np.load(Path(path) / f"{k}.npy", mmap_mode="r") for k in FILES}
        except (OSError, ValueError) as e:
            raise RecurError(f"dataset {path}: ARC arrays missing or corrupt: {e}") from None
        # the grids are small (tens of MB at most) and read at random: keep them in memory
        self.grids = np.ascontiguousarray(self.a["grids"]).reshape(-1)
        self.shapes = np.asarray(self.a["grid_shape"]).astype(np.int32)

    def describe(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """For examples idx: task (row of task_ids), pair (pair_index: for the test split the test input's index
        in its task), aug (augmentation index), puzzle (row of the puzzle arrays), pair_row (row of the pair arrays)."""
        idx = np.asarray(idx, np.int64)
        p = self.split.example_puzzle[idx]
        pair = self.a["puzzle_pair"][p] + (idx - self.split.arrays["puzzle_index"][p])
        return {"task": np.asarray(self.a["puzzle_task"][p]), "pair": np.asarray(self.a["pair_index"][pair]),
                "aug": np.asarray(self.a["puzzle_aug"][p]), "puzzle": p, "pair_row": pair}

    def _draw(self, grid: np.ndarray, d: np.ndarray, colours: np.ndarray, r0: np.ndarray, c0: np.ndarray
              ) -> np.ndarray:
        """Tokens int32 [b, S*S] of grids (rows of `grids`, -1 = none: all PAD) under augmentations (d [b],
        colours [b, 10]) with top-left corners at (r0, c0)."""
        S, b = self.side, len(grid)
        known = grid >= 0
        g = np.where(known, grid, 0)
        h, w = self.shapes[g, 0], self.shapes[g, 1]  # original sides [b]
        swap = SWAPS_SIDES[d]
        H = np.where(known, np.where(swap, w, h), 0)[:, None, None]  # augmented sides [b, 1, 1]
        W = np.where(known, np.where(swap, h, w), 0)[:, None, None]
        i = np.arange(S, dtype=np.int32)[None, :, None] - r0[:, None, None]  # [b, S, 1] row within the grid
        j = np.arange(S, dtype=np.int32)[None, None, :] - c0[:, None, None]  # [b, 1, S] column within it
        in_rows, in_cols = (i >= 0) & (i < H), (j >= 0) & (j < W)
        inside = in_rows & in_cols  # [b, S, S]
        sr, sc = source_cells(d[:, None, None], i, j, h[:, None, None], w[:, None, None])
        flat = (g[:, None, None] * S + np.clip(sr, 0, S - 1)) * S + np.clip(sc, 0, S - 1)
        colour = self.grids[flat].reshape(b, -1)  # [b, S*S] original colours
        mapped = np.take_along_axis(colours, colour, axis=1).reshape(b, S, S).astype(np.int32) + COLOUR0
        eos = ((i == H) & in_cols) | ((j == W) & in_rows)
        return np.where(inside, mapped, np.where(eos, EOS, 0)).reshape(b, S * S).astype(np.int32)

    def offsets(self, idx: np.ndarray, epochs: np.ndarray, seed: int, rows: dict, d: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Translation (r0, c0) int32 [b] of examples idx drawn in `epochs` (see the module docstring)."""
        S, a = self.side, self.a
        p = rows["puzzle"]
        gin, gout = np.asarray(a["pair_input"][rows["pair_row"]]), np.asarray(a["pair_output"][rows["pair_row"]])
        sides = self.shapes[gin]
        out_sides = np.where((gout >= 0)[:, None], self.shapes[np.maximum(gout, 0)], 0)
        span = np.maximum(sides, out_sides)  # [b, 2] rows and columns both grids need (before the symmetry)
        span = np.where(SWAPS_SIDES[d][:, None], span[:, ::-1], span)
        pidx = self.split.arrays["puzzle_index"]
        count = np.asarray(pidx[p + 1] - pidx[p])
        fixed = (idx - np.asarray(pidx[p])) == (draw_hash(seed, epochs, p, 0) % count.astype(np.uint64)).astype(np.int64)
        u = draw_hash(seed, epochs, idx, 1)
        r0 = (u & np.uint64(0xFFFFFFFF)) % (S - span[:, 0] + 1).astype(np.uint64)
        c0 = (u >> np.uint64(32)) % (S - span[:, 1] + 1).astype(np.uint64)
        return np.where(fixed, 0, r0).astype(np.int32), np.where(fixed, 0, c0).astype(np.int32)

    def batch(self, idx: np.ndarray, epochs: np.ndarray | None = None, seed: int = 0) -> dict[str, np.ndarray]:
        """Examples idx as int32 arrays: inputs [b, S*S], labels [b, S*S] (0 = PAD, ignored by the loss),
        puzzle_ids [b]. With `epochs` (the sampler's epoch of each row) training examples are translated."""
        idx = np.asarray(idx, np.int64)
        rows = self.describe(idx)
        p, pair, a = rows["puzzle"], rows["pair_row"], self.a
        d = np.asarray(a["puzzle_dihedral"][p]).astype(np.int64)
        colours = np.asarray(a["puzzle_colours"][p]).astype(np.int64)
        if self.translate and epochs is not None:
            r0, c0 = self.offsets(idx, np.asarray(epochs), seed, rows, d)
        else:
            r0 = c0 = np.zeros(len(idx), np.int32)
        return {"inputs": self._draw(np.asarray(a["pair_input"][pair]), d, colours, r0, c0),
                "labels": self._draw(np.asarray(a["pair_output"][pair]), d, colours, r0, c0),
                "puzzle_ids": np.asarray(self.split.arrays["puzzle_ids"][p]).astype(np.int32)}

    def original(self, grid_row: int) -> np.ndarray | None:
        """A stored grid as given (uint8 [h, w]); None for -1 (an unknown solution)."""
        if grid_row < 0:
            return None
        h, w = self.shapes[grid_row]
        S = self.side
        return self.grids[grid_row * S * S:(grid_row + 1) * S * S].reshape(S, S)[:h, :w].copy()


    def tasks(self) -> list[tuple[int, str, list[tuple[np.ndarray, np.ndarray | None]]]]:
        """The split's tasks in order: (task row, task id, its pairs in this split as given: (input,
        output or None)); for the test split, the test inputs in their task's order."""
        a, gidx, pidx = self.a, self.split.arrays["group_index"], self.split.arrays["puzzle_index"]
        out = []
        for g in range(len(gidx) - 1):
            p = int(gidx[g])
            first, n = int(a["puzzle_pair"][p]), int(pidx[p + 1] - pidx[p])
            pairs = [(self.original(int(a["pair_input"][q])), self.original(int(a["pair_output"][q])))
                     for q in range(first, first + n)]
            t = int(a["puzzle_task"][p])
            out.append((t, str(a["task_ids"][t]), pairs))
        return out
