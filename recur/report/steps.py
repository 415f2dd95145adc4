"""`recur solve --show-steps`: the answer after each supervision step as text, with changed cells marked.

Every cell is printed three characters wide: ` 5 ` normally, `[5]` when it changed since the
previous step (step 1: since the puzzle), so the marks survive copy and paste and need no colour.
On a terminal (and without NO_COLOR) changed cells are also drawn bold yellow.

The cell layouts below are keyed by task name, like the HTML viewer's renderers; a task without
one is shown as a row of token ids.
"""

from __future__ import annotations

import os

import numpy as np

from ..tasks.maze import CHARS
from ..tasks.nqueens import QUEEN
from ..tasks.sudoku import BOX, from_tokens

Cells = tuple[list[list[str]], tuple[int, int] | None]
"""(glyph rows, (box rows, box cols) or None): one glyph per token, row-major."""


def _sudoku(tokens: np.ndarray, info: dict) -> Cells:
    size = info["size"]
    digits = from_tokens(tokens).reshape(size, size).tolist()
    return [[str(d) if d else "." for d in row] for row in digits], BOX[size]


def _square(glyph):
    def cells(tokens: np.ndarray, info: dict) -> Cells:
        size = info["size"]
        return [[glyph(t) for t in row] for row in np.asarray(tokens).reshape(size, size).tolist()], None
    return cells


def _row(glyph):
    return lambda tokens, info: ([[glyph(t) for t in np.asarray(tokens).reshape(-1).tolist()]], None)


def _arc(tokens: np.ndarray, info: dict) -> Cells:
    """The ARC canvas: colours 0-9, '|' for EOS (where the answer's grid ends), blank for PAD."""
    side = info["side"]
    glyph = lambda t: str(t - 2) if t >= 2 else "|" if t == 1 else " "  # noqa: E731
    return [[glyph(t) for t in row] for row in np.asarray(tokens).reshape(side, side).tolist()], None


CELLS = {
    "sudoku": _sudoku,
    "maze": _square(lambda t: CHARS[t - 1] if 1 <= t <= len(CHARS) else "?"),
    "nqueens": _square(lambda t: "Q" if t == QUEEN else "."),
    "sorting": _row(lambda t: str(t - 1) if t else "_"),
    "arc": _arc,
}
FALLBACK = _row(str)


def use_color(stream) -> bool:
    """ANSI colour only on a terminal and when NO_COLOR is unset or empty (no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def grid(task: str, info: dict, tokens: np.ndarray, inputs: np.ndarray, changed: np.ndarray, color: bool) -> str:
    """One answer as text: changed cells [x], positions that are PAD in the puzzle left blank."""
    rows, box = CELLS.get(task, FALLBACK)(tokens, info)
    width = max(len(g) for row in rows for g in row)
    cols = len(rows[0])
    pad, changed = (np.asarray(inputs).reshape(-1) == 0), np.asarray(changed).reshape(-1)
    lines = []
    for r, row in enumerate(rows):
        if box and r and r % box[0] == 0:
            lines.append("+".join("-" * ((width + 2) * box[1]) for _ in range(cols // box[1])))
        parts = []
        for c, g in enumerate(row):
            k = r * cols + c
            cell = " " * (width + 2) if pad[k] else (f"[{g:>{width}}]" if changed[k] else f" {g:>{width}} ")
            if color and changed[k] and not pad[k]:
                cell = f"\x1b[1;33m{cell}\x1b[0m"
            parts.append(("|" if box and c and c % box[1] == 0 else "") + cell)
        lines.append("".join(parts).rstrip())
    return "\n".join(lines)


def show_steps(task: str, info: dict, inputs: np.ndarray, per_step: np.ndarray, halt: np.ndarray | None,
               color: bool = False) -> str:
    """Answers after steps 1..S (per_step [S, L], one puzzle) with what each step changed; `halt` [S] the
    halting confidence after each step (None: the model has no halting head)."""
    inputs = np.asarray(inputs).reshape(-1)
    answers = np.where(inputs == 0, 0, np.asarray(per_step))
    blocks = ["[x] = changed since the previous step (step 1: since the puzzle)"]
    for s, tokens in enumerate(answers, 1):
        changed = (tokens != (inputs if s == 1 else answers[s - 2])) & (inputs != 0)
        n = int(changed.sum())
        head = f"after supervision step {s}: {n} cell{'s' * (n != 1)} changed"
        if halt is not None:
            head += f", halting confidence {float(halt[s - 1]):.2f}"
        blocks.append(head + "\n" + grid(task, info, tokens, inputs, changed, color))
    return "\n\n".join(blocks)
