"""The report as one self-contained HTML file: viewer.html with the collected dict inlined.

No server, no network: the page's styles, scripts and data are all in the file, and its charts
are SVG drawn by its own script. The data sits in `<script id="recur-data" type="application/json">`
with `<`, `>` and `&` escaped as JSON unicode escapes, so no value can end the script element.
"""

from __future__ import annotations

import html
import json
import math
import os
from importlib import resources
from pathlib import Path

from ..errors import RecurError

GENERATOR = '<meta name="generator" content="recur report">'
"""Marks a file as a recur report: only such a file is ever overwritten."""


def template() -> str:
    return resources.files("recur.report").joinpath("viewer.html").read_text(encoding="utf-8")


def render(report: dict) -> str:
    """The page for a dict from recur.report.collect.collect."""
    data = json.dumps(_finite(report), separators=(",", ":"), allow_nan=False)
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    title = ", ".join(r["name"] for r in report["runs"]) or "no runs"
    page = template()
    return page.replace("__RECUR_TITLE__", html.escape(title), 1).replace("__RECUR_DATA__", data, 1)


def _finite(value):
    """NaN and infinities (a diverged loss, say) become null: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write(report: dict, out: str | Path) -> Path:
    """Write the page to `out` atomically; an existing file is replaced only when it is a recur report."""
    out = Path(out)
    if out.is_dir():
        raise RecurError(f"{out} is a directory; --out names the HTML file to write")
    if out.exists():
        try:
            head = out.read_text(encoding="utf-8", errors="replace")[:4096]
        except OSError as e:
            raise RecurError(f"cannot read {out}: {e.strerror}") from None
        if GENERATOR not in head:
            raise RecurError(f"{out} exists and is not a recur report; refusing to overwrite it (pick another --out)")
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(render(report), encoding="utf-8")
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise RecurError(f"cannot write the report to {out}: {e.strerror}") from None
    return out
