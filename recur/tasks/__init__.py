"""Task registry: `data.task` in the config names one of these."""

from .arc import Arc
from .base import Task
from .maze import Maze
from .nqueens import NQueens
from .sorting import Sorting
from .sudoku import Sudoku

REGISTRY: dict[str, Task] = {"sudoku": Sudoku(), "maze": Maze(), "nqueens": NQueens(), "sorting": Sorting(),
                           "arc": Arc()}
