"""Task registry: `data.task` in the config names one of these."""

from .base import Task
from .sudoku import Sudoku

REGISTRY: dict[str, Task] = {"sudoku": Sudoku()}
