"""ARC grids on the reference's token canvas, and back.

A grid is uint8 [h, w] with colours 0..9, 1 <= h, w <= 30. On the canvas (side S, the reference's
30, so seq_len = S*S = 900, row-major) the tokens are 0 = PAD, 1 = EOS, 2..11 = colours 0..9
(vocab 12). A grid placed at offset (r0, c0) fills rows r0..r0+h-1 and columns c0..c0+w-1; EOS
marks the row just below it (across its width, when that row is on the canvas) and the column just
right of it (down its height), so the corner cell diagonal to the grid stays PAD. The model learns
to write these EOS cells, which is how it says how big its answer is.

`crop_shapes` reads a predicted answer back with the reference evaluator's rule: the largest
rectangle of colour tokens anchored at the top-left corner. Row r's run is the number of colour
tokens at the start of row r; the width allowed at height r is the minimum run over rows 0..r;
the answer is the height whose height x width is largest (the smallest such height on a tie), and
an empty 0x0 grid when the first token is no colour. A grid written at (0, 0) with its EOS marks is
recovered exactly, whatever its size, because its EOS column (or the canvas edge) ends every run
and its EOS row (or the canvas edge) ends the rectangle.
"""

from __future__ import annotations

import numpy as np

PAD, EOS, COLOUR0 = 0, 1, 2
"""Token ids: padding, end-of-grid marker, colour 0 (colour c is token c + 2)."""
VOCAB_SIZE = 12
MAX_SIDE = 30
"""ARC grids are at most 30x30 (the reference canvas)."""


def encode(grid: np.ndarray, side: int = MAX_SIDE, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """One grid [h, w] -> canvas tokens uint8 [side*side] with its EOS marks, top-left corner at `offset`."""
    g = np.asarray(grid, np.uint8)
    h, w = g.shape
    r0, c0 = offset
    if not (0 <= r0 <= side - h and 0 <= c0 <= side - w):
        raise ValueError(f"a {h}x{w} grid at offset {offset} does not fit a {side}x{side} canvas")
    canvas = np.zeros((side, side), np.uint8)
    canvas[r0:r0 + h, c0:c0 + w] = g + COLOUR0
    if r0 + h < side:
        canvas[r0 + h, c0:c0 + w] = EOS
    if c0 + w < side:
        canvas[r0:r0 + h, c0 + w] = EOS
    return canvas.reshape(-1)


def crop_shapes(tokens: np.ndarray, side: int = MAX_SIDE) -> np.ndarray:
    """Canvas tokens [b, side*side] -> (height, width) int64 [b, 2] of each answer (see the module docstring)."""
    t = np.asarray(tokens).reshape(-1, side, side)
    colour = (t >= COLOUR0) & (t < COLOUR0 + 10)  # [b, S, S]
    run = np.where(colour.all(-1), side, np.argmin(colour, axis=-1))  # [b, S] leading colour tokens per row
    width = np.minimum.accumulate(run, axis=1)  # [b, S] widest rectangle of rows 0..r
    area = width * np.arange(1, side + 1)
    best = np.argmax(area, axis=1)  # first maximum: the smallest height on a tie
    rows = np.arange(len(t))
    h = np.where(area[rows, best] > 0, best + 1, 0)
    return np.stack([h, np.where(h > 0, width[rows, best], 0)], axis=1)


def crop(tokens: np.ndarray, side: int = MAX_SIDE) -> list[np.ndarray]:
    """Canvas tokens [b, side*side] (or one [side*side]) -> the answer grids, uint8 colours (see crop_shapes)."""
    t = np.asarray(tokens).reshape(-1, side, side)
    return [(t[i, :h, :w] - COLOUR0).astype(np.uint8) for i, (h, w) in enumerate(crop_shapes(t, side))]


def parse_grid(text: str) -> np.ndarray:
    """A grid as text: one line per row of digits 0-9 (spaces and commas ignored); ValueError naming the problem."""
    rows = [[int(ch) for ch in line if ch.isdigit()] for line in text.strip().splitlines() if line.strip()]
    bad = next((ch for ch in text if not (ch.isdigit() or ch.isspace() or ch in ",[]")), None)
    if bad is not None:
        raise ValueError(f"bad character {bad!r}; a grid is rows of digits 0-9")
    if not rows:
        raise ValueError("the grid is empty")
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"rows have different lengths ({', '.join(str(len(r)) for r in rows)})")
    if len(rows) > MAX_SIDE or len(rows[0]) > MAX_SIDE:
        raise ValueError(f"a {len(rows)}x{len(rows[0])} grid is larger than {MAX_SIDE}x{MAX_SIDE}")
    return np.array(rows, np.uint8)


def grid_text(grid: np.ndarray) -> str:
    """A grid as rows of digits, the inverse of parse_grid."""
    return "\n".join("".join(str(int(v)) for v in row) for row in np.asarray(grid))
