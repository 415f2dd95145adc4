"""See the recursion think: one self-contained HTML page per run (or several runs side by side).

    recur report RUN [RUN ...] [--out report.html] [--sample N]

    from recur.report import build
    build(["runs/quickstart-..."])            # -> runs/quickstart-.../report.html

collect.py gathers the run's files and traces a sample of test puzzles through every answer
update (trace.py); render.py inlines that dict into viewer.html. steps.py prints the same
recursion as text for `recur solve --show-steps`.

The data the page reads (`<script id="recur-data">`, JSON):

    format "recur-report", version 1, recur, generated, seconds
    notes        [str]                  what could not be read, outside any run
    comparisons  [{name, path, description, table (table.md), runs [run names]}]
    runs         [run], each:
      name, path, kind ("run" | "checkpoint"), notes [str] (what is missing, in words)
      meta         config.json without its config: preset, recur, torch, python, world_size, device, dtype, dataset
      config       the resolved config (nested dict), or null
      summary      summary.json, or null (still training, or stopped early)
      curves       {train: {step: [...], loss, lm_loss, halt_loss, accuracy, exact_accuracy, halt_accuracy, lr, elapsed_s},
                    eval: {step: [...], exact_accuracy, token_accuracy, exact_adaptive, halt_accuracy, ...}}: columns
      eval         the last evaluation (exact/token accuracy, exact_per_step, token_per_step, net_calls, flops, ...)
      checkpoints  [{name, step}]; checkpoint {name, step}: the one the recursion was measured with
      data         {path, task, info, splits {name: {examples, puzzles, groups}}, settings}, or null
      params, wall_s, train_s, cost {train_net_calls, train_flops, eval_net_calls, eval_flops,
                                     adaptive_net_calls, net_calls_per_step} (per example)
      profile      profile.json as `recur profile` writes it (points with margin, dead, ...), or null
      recursion    {checkpoint_step, split, examples, n_sup, points_per_step, net_calls_per_step,
                    per_point {step, cycle, net_calls, exact, token}: one entry per answer update,
                    per_step {exact, token}, halting {act, threshold, counts [per step 1..N_sup], never} | null}
      sample       {task, info, size, measured, counts {solved, changed, measured},
                    encoding ("chars": a token row is a string, token t = alphabet[t]; "ints": a list), alphabet,
                    points {step, cycle, net_calls}: the P answer updates,
                    puzzles [{example (index in the test split), input, label, trace [P token rows],
                              halt [sigmoid(halting score) per step] | null, halt_step (adaptive) | null,
                              solved (matches the label after the last step), valid (task.verify),
                              changed (the answer still changes after step 1)}]}

A task is drawn in the page by the entry of its name in viewer.html's RENDERERS table
(shape, glyph, optional fill colour and box lines); a task without one shows token ids.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RecurError
from ..lock import RunLock
from .collect import EXAMPLES, SAMPLE, collect
from .render import write


def default_out(paths: list[str | Path]) -> Path:
    """RUN/report.html for one run, comparison or checkpoint directory; ./report.html for several."""
    if len(paths) == 1:
        p = Path(paths[0])
        return (p.parent if p.is_file() else p) / "report.html"
    return Path("report.html")


def build(paths: list[str | Path], out: str | Path | None = None, sample: int | None = None,
          examples: int | None = None, device: str = "cpu", data: str | Path | None = None) -> tuple[Path, dict]:
    """Collect `paths` (runs, comparisons, checkpoints) and write the page; returns (its path, the data).
    `sample` (default SAMPLE) puzzles per run go to the viewer, out of `examples` (default EXAMPLES) measured."""
    if not paths:
        raise RecurError("give at least one run directory")
    report = collect(paths, SAMPLE if sample is None else sample, EXAMPLES if examples is None else examples,
                     device, data)
    out = Path(out or default_out(paths))
    if (out.parent / "config.json").is_file():  # writing into a run: not while another process writes into it
        with RunLock(out.parent, "report"):
            return write(report, out), report
    return write(report, out), report
