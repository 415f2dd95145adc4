"""ARC grids as pictures: SVG strings in the ARC palette (for HTML reports) and terminal text."""

from __future__ import annotations

from html import escape

import numpy as np

PALETTE = ("#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00", "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF",
           "#870C25")
"""Colour c of an ARC grid is drawn as PALETTE[c] (the palette of the ARC testing interface)."""


def svg(grid: np.ndarray, cell: int = 12, title: str = "") -> str:
    """One grid as an SVG element: a `cell`-pixel square per cell, thin grey lines between them."""
    g = np.asarray(grid)
    h, w = g.shape
    rects = "".join(f'<rect x="{c * cell}" y="{r * cell}" width="{cell}" height="{cell}" fill="{PALETTE[int(v)]}"/>'
                    for r, row in enumerate(g) for c, v in enumerate(row))
    label = f"<title>{escape(title)}</title>" if title else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * cell}" height="{h * cell}" '
            f'viewBox="0 0 {w * cell} {h * cell}">{label}<g stroke="#555" stroke-width="0.5">{rects}</g></svg>')


def svg_row(panels: list[tuple[str, np.ndarray | None]], cell: int = 12, gap: int = 16) -> str:
    """Grids side by side with a caption under each, e.g. [("input", x), ("target", y), ("prediction", p)];
    a None grid is drawn as an empty frame captioned "(none)"."""
    parts, x, height = [], 0, 0
    for caption, grid in panels:
        h, w = (0, 0) if grid is None else np.asarray(grid).shape
        width = max(w * cell, 8 * len(caption) + 8, 40)
        inner = svg(grid, cell, caption) if grid is not None else ""
        parts.append(f'<g transform="translate({x},0)">{inner}'
                     f'<text x="0" y="{max(h * cell, cell) + 14}" font-family="sans-serif" font-size="12">'
                     f'{escape(caption if grid is not None else caption + " (none)")}</text></g>')
        x += width + gap
        height = max(height, max(h * cell, cell) + 20)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{max(x - gap, 1)}" height="{height}">'
            + "".join(parts) + "</svg>")


def text(grid: np.ndarray, colour: bool = False) -> str:
    """One grid for a terminal: with colour, two spaces per cell on an ANSI 24-bit background; without,
    the digits separated by spaces."""
    g = np.asarray(grid)
    if not colour:
        return "\n".join(" ".join(str(int(v)) for v in row) for row in g)
    rgb = [tuple(int(p[i:i + 2], 16) for i in (1, 3, 5)) for p in PALETTE]
    return "\n".join("".join("\x1b[48;2;{};{};{}m  ".format(*rgb[int(v)]) for v in row) + "\x1b[0m" for row in g)
