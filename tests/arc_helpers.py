"""Synthetic ARC tasks and files for the ARC tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recur.tasks.arc.sources import ArcTask

DATA = next((p / "shared" / "data" / "arc" for p in Path(__file__).resolve().parents[1:3]
             if (p / "shared" / "data" / "arc").is_dir()), None)
"""The Kaggle ARC files beside the repository (shared/data/arc), when present."""


def random_grid(rng: np.random.Generator, max_side: int = 6, colours: int = 10) -> np.ndarray:
    h, w = rng.integers(1, max_side + 1, 2)
    return rng.integers(0, colours, (h, w)).astype(np.uint8)


def random_task(rng: np.random.Generator, task_id: str, demos: int = 3, tests: int = 1, max_side: int = 6,
                solved: bool = True) -> ArcTask:
    train = [(random_grid(rng, max_side), random_grid(rng, max_side)) for _ in range(demos)]
    test = [(random_grid(rng, max_side), random_grid(rng, max_side) if solved else None) for _ in range(tests)]
    return ArcTask(task_id, train, test, "synthetic", solved)


def to_json(task: ArcTask, test_outputs: bool = True) -> dict:
    def pair(x, y):
        return {"input": x.tolist(), **({"output": y.tolist()} if y is not None else {})}
    return {"train": [pair(x, y) for x, y in task.train],
            "test": [pair(x, y if test_outputs else None) for x, y in task.test]}


def write_kaggle(folder: Path, name: str, tasks: list[ArcTask], solutions: bool = True) -> Path:
    """arc-agi_NAME_challenges.json (+ _solutions.json) in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"arc-agi_{name}_challenges.json"
    path.write_text(json.dumps({t.id: to_json(t, test_outputs=False) for t in tasks}))
    if solutions:
        (folder / f"arc-agi_{name}_solutions.json").write_text(
            json.dumps({t.id: [y.tolist() for _, y in t.test] for t in tasks}))
    return path
