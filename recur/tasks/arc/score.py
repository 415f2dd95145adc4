"""ARC scores from votes, the Kaggle submission file, and scoring a submission against solutions.

Two scoring rules, named apart because they differ whenever a task has several test inputs:

  pass@k       per-test-input credit: a test input is solved when its solution is among its k best
               candidates; a task scores solved inputs / inputs; the score is the mean over tasks.
               The official ARC Prize scorer and TRM's evaluator (with k = 2 for the 2 attempts).
  task_pass@k  all-or-nothing: a task counts only when every one of its test inputs is solved (HRM's
               evaluation notebook); the score is the share of such tasks.

Neither is `per_example_exact`, the share of single augmented versions whose own answer (cropped
and de-augmented, no voting) is the solution: the per-example exact accuracy that training logs
report and that is often mistaken for pass@k (TRM issue #55). `canonical_pass@1` is pass@1's per-input
credit from the un-augmented version alone: the single canonical pass that the vote improves on.

Submission (Kaggle 2024/2025): {task_id: [{"attempt_1": grid, "attempt_2": grid}, ...]}, one entry
per test input in order, every test task present. Attempts are the two best candidates; with one
candidate it fills both attempts (as the reference evaluator pads), with none both are the 1x1
placeholder [[0]], since the format has no way to say "no answer".
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ...errors import RecurError
from .vote import Votes

PASS_KS = (1, 2, 5, 10, 100, 1000)
PLACEHOLDER = [[0]]
"""The attempt written for a test input without any candidate."""


def score(votes: Votes, ks: tuple[int, ...] = PASS_KS) -> dict[str, float]:
    """pass@k and task_pass@k for each k, per_example_exact, and counts (see the module docstring);
    RecurError when a test task's solutions are unknown."""
    tasks = votes.examples.tasks()
    per_input = {k: [] for k in ks}
    whole = {k: [] for k in ks}
    for task, task_id, pairs in tasks:
        solved = np.zeros((len(ks), len(pairs)), bool)
        for i, (_, solution) in enumerate(pairs):
            if solution is None:
                raise RecurError(f"test task {task_id}: test input {i} has no known solution, so it cannot be "
                                 "scored (write a submission instead)")
            ranks = [n for n, (grid, _, _) in enumerate(votes.ranked(task, i)) if np.array_equal(grid, solution)]
            for j, k in enumerate(ks):
                solved[j, i] = bool(ranks) and ranks[0] < k
        for j, k in enumerate(ks):
            per_input[k].append(solved[j].mean())
            whole[k].append(solved[j].all())
    n = max(len(tasks), 1)
    out = {f"pass@{k}": float(np.sum(per_input[k]) / n) for k in ks}
    out.update({f"task_pass@{k}": float(np.sum(whole[k]) / n) for k in ks})
    out["per_example_exact"] = votes.rows_exact / max(votes.rows_scored, 1)
    # the same per-input credit from the un-augmented version alone: what the vote adds over one canonical pass
    canonical = [np.mean([votes.canonical.get((task, i), False) for i in range(len(pairs))]) for task, _, pairs in tasks]
    out["canonical_pass@1"] = float(np.sum(canonical) / n)
    out["tasks"] = len(tasks)
    out["test_inputs"] = sum(len(p) for _, _, p in tasks)
    return out


def submission(votes: Votes, attempts: int = 2) -> dict[str, list[dict[str, list]]]:
    """The Kaggle submission of the votes: every test task and test input, in order (see the module docstring)."""
    out = {}
    for task, task_id, pairs in votes.examples.tasks():
        entries = []
        for i in range(len(pairs)):
            best = [grid.tolist() for grid, _, _ in votes.ranked(task, i)[:attempts]] or [PLACEHOLDER]
            best += [best[0]] * (attempts - len(best))
            entries.append({f"attempt_{a + 1}": best[a] for a in range(attempts)})
        out[task_id] = entries
    return out


def write_submission(path: str | Path, sub: dict) -> Path:
    """Write a submission JSON atomically (a temporary file renamed), never over a directory."""
    path = Path(path)
    if path.is_dir():
        raise RecurError(f"{path} is a directory; give the submission file's name (e.g. {path}/submission.json)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(sub, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _load(path: Path, what: str):
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        raise RecurError(f"{path}: cannot read the {what} ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecurError(f"{path}: the {what} is not valid JSON ({e})") from None


def _is_grid(value) -> bool:
    return (isinstance(value, list) and len(value) > 0 and all(isinstance(r, list) and r for r in value)
            and len({len(r) for r in value}) == 1
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 9 for r in value for v in r))


def score_submission(submission_path: str | Path, solutions_path: str | Path) -> dict:
    """Score a Kaggle submission file against a solutions file ({task_id: [output grid per test input]})
    with the ARC Prize rule: a test input is solved when either attempt equals its solution; a task
    scores solved inputs / inputs; the score is the mean over the solutions' tasks. Returns
    {"score", "tasks", "test_inputs", "solved_inputs", "per_task": {task_id: score}}; a malformed
    submission is a RecurError naming the file, task and test input."""
    sub, sols = _load(Path(submission_path), "submission"), _load(Path(solutions_path), "solutions")
    if not isinstance(sub, dict):
        raise RecurError(f"{submission_path}: a submission is an object {{task_id: [attempts per test input]}}")
    if not isinstance(sols, dict):
        raise RecurError(f"{solutions_path}: solutions are an object {{task_id: [grid per test input]}}")
    if extra := [t for t in sub if t not in sols]:
        raise RecurError(f"{submission_path}: task {extra[0]} is not in {solutions_path}")
    per_task, solved_inputs, inputs = {}, 0, 0
    for task_id, solutions in sols.items():
        where = f"{submission_path}: task {task_id}"
        if task_id not in sub:
            raise RecurError(f"{where}: missing (every task of the solutions needs an entry)")
        entries = sub[task_id]
        if not isinstance(entries, list) or len(entries) != len(solutions):
            n = len(entries) if isinstance(entries, list) else "no list of"
            raise RecurError(f"{where}: {n} entries for {len(solutions)} test inputs")
        solved = 0
        for i, (entry, solution) in enumerate(zip(entries, solutions)):
            if not isinstance(entry, dict) or sorted(entry) != ["attempt_1", "attempt_2"]:
                raise RecurError(f"{where} test input {i}: expected an object with attempt_1 and attempt_2")
            for name, grid in entry.items():
                if not _is_grid(grid):
                    raise RecurError(f"{where} test input {i} {name}: not a grid of colours 0-9 with equal rows")
            solved += any(grid == solution for grid in entry.values())
        per_task[task_id] = solved / len(solutions)
        solved_inputs += solved
        inputs += len(solutions)
    n = max(len(sols), 1)
    return {"score": sum(per_task.values()) / n, "tasks": len(sols), "test_inputs": inputs,
            "solved_inputs": solved_inputs, "per_task": per_task}
