"""Models that ship with recur: trained by a documented recur command on recur's own generated data.

    recur.load("sudoku9")            # by name
    recur solve "<81 characters>"    # without --model: the shipped model that fits the puzzle's size
    recur report --demo              # a shipped model thinking, in the step-through viewer

Each file is an exported model.safetensors (`recur export RUN OUT`): the evaluation weights with the run's
config, dataset info and data settings in its header, and no training state or machine paths. Preset
`pretrained-NAME` is the recipe of model NAME (`recur train pretrained-sudoku9`, then
`recur export runs/... recur/pretrained/sudoku9.safetensors --force`); docs/benchmarks.md section 15 has
their accuracy.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent

REGISTRY = {
    "sudoku6": "sudoku6.safetensors",
    "sudoku9": "sudoku9.safetensors",
}
"""Shipped model name -> its file in this folder."""

CELLS = {36: "sudoku6", 81: "sudoku9"}
"""Puzzle cells -> the shipped model that solves puzzles of that size (for `recur solve` without --model)."""


def path(name: str) -> Path | None:
    """The file of shipped model `name` (None: no shipped model has that name)."""
    return HERE / REGISTRY[name] if name in REGISTRY else None


def for_cells(cells: int) -> str | None:
    """The name of the shipped model for puzzles of `cells` cells, if any."""
    return CELLS.get(cells)
