"""Task registry: `data.task` in the config names one of these."""

from .arc import Arc
from .base import Task
from .maze import Maze
from .nqueens import NQueens
from .sorting import Sorting
from .sudoku import Sudoku
from .synthetic import Addition, Parity, SortingText
from .text import Text

REGISTRY: dict[str, Task] = {"sudoku": Sudoku(), "maze": Maze(), "nqueens": NQueens(), "sorting": Sorting(),
                             "text": Text(), "addition": Addition(), "parity": Parity(), "sorting_text": SortingText(),
                             "arc": Arc()}
