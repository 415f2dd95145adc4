"""Voting over the augmented versions of each ARC test input, streamed batch by batch.

For every row the evaluation loop feeds (its test-split example index, the predicted tokens
[b, S*S] = argmax of the logits, and sigmoid(q_halt) [b]), the answer is cropped at its EOS
boundary (recur.tasks.arc.grids.crop), de-augmented (inverse symmetry, then inverse colour map) and
counted under its test input (task, test index). Only distinct candidate grids are kept, each with
its vote count and the sum of its halting probabilities, so memory is bounded by
test inputs x distinct answers (at most the 1 + K versions of each input), never by logits.
Candidates rank by (count, then mean sigmoid(q_halt)) descending, as the reference evaluator;
remaining ties go to the smaller grid bytes, so the order does not depend on which rank or batch
came first. An answer whose top-left token is no colour (an empty crop) is no candidate. The
reference keys votes by (task, hash of the de-augmented input), so two identical test inputs of one
task would share their votes; here each test input (task, index) votes on its own.

The accumulator is made fresh for each evaluation. Voting across checkpoints (the reference's
`aggregated_voting`, on by default there, TRM issue #35) is the caller's explicit choice: keep one
accumulator and feed it again, or `merge` those of several evaluations. Data-parallel ranks each
feed their rows and `merge` the others' accumulators (they pickle as plain dicts).
"""

from __future__ import annotations

import numpy as np

from .augment import invert
from .grids import crop
from .layout import ArcExamples


def _key(grid: np.ndarray) -> bytes:
    return bytes(grid.shape) + grid.tobytes()


class Votes:
    """Candidate answers per test input of a test split (see the module docstring)."""

    def __init__(self, examples: ArcExamples):
        self.examples = examples
        self.side = examples.side
        self.candidates: dict[tuple[int, int], dict[bytes, list]] = {}
        """(task row, test index) -> {grid key: [count, sum of sigmoid(q_halt), grid]}."""
        self.rows = 0
        """Rows fed."""
        self.rows_exact = 0
        """Rows whose own de-augmented answer equals the known solution (per-example exact, no voting)."""
        self.rows_scored = 0
        """Rows whose solution is known."""
        self.canonical: dict[tuple[int, int], bool] = {}
        """(task row, test index) -> whether the un-augmented version's own answer is the solution: the single
        canonical pass the vote is measured against."""

    def add(self, idx: np.ndarray, tokens: np.ndarray, halt_prob: np.ndarray) -> None:
        """Feed one batch: test-split example indices idx [b], predicted tokens [b, S*S], sigmoid(q_halt) [b]."""
        idx = np.asarray(idx, np.int64)
        tokens = np.asarray(tokens)
        halt_prob = np.asarray(halt_prob, np.float64)
        if tokens.shape != (len(idx), self.side * self.side) or halt_prob.shape != (len(idx),):
            raise ValueError(f"expected tokens [{len(idx)}, {self.side ** 2}] and halt_prob [{len(idx)}], "
                             f"got {tokens.shape} and {halt_prob.shape}")
        rows = self.examples.describe(idx)
        a = self.examples.a
        d = np.asarray(a["puzzle_dihedral"][rows["puzzle"]])
        colours = np.asarray(a["puzzle_colours"][rows["puzzle"]])
        solution = np.asarray(a["pair_output"][rows["pair_row"]])
        for r, answer in enumerate(crop(tokens, self.side)):
            self.rows += 1
            known = solution[r] >= 0
            self.rows_scored += int(known)
            if answer.size == 0:
                continue
            grid = invert(answer, int(d[r]), colours[r])
            key = _key(grid)
            if known:
                right = key == _key(self.examples.original(int(solution[r])))
                self.rows_exact += int(right)
                if int(rows["aug"][r]) == 0:
                    self.canonical[(int(rows["task"][r]), int(rows["pair"][r]))] = right
            slot = self.candidates.setdefault((int(rows["task"][r]), int(rows["pair"][r])), {})
            entry = slot.setdefault(key, [0, 0.0, grid])
            entry[0] += 1
            entry[1] += float(halt_prob[r])

    def merge(self, other: "Votes") -> "Votes":
        """Add another accumulator's votes (another rank's, or another evaluation's) into this one."""
        for where, slot in other.candidates.items():
            mine = self.candidates.setdefault(where, {})
            for key, (count, q, grid) in slot.items():
                entry = mine.setdefault(key, [0, 0.0, grid])
                entry[0] += count
                entry[1] += q
        self.rows += other.rows
        self.rows_exact += other.rows_exact
        self.canonical.update(other.canonical)
        self.rows_scored += other.rows_scored
        return self

    def ranked(self, task: int, test: int) -> list[tuple[np.ndarray, int, float]]:
        """The candidates of one test input, best first: (grid, votes, mean sigmoid(q_halt))."""
        slot = self.candidates.get((task, test), {})
        order = sorted(slot.items(), key=lambda kv: (-kv[1][0], -kv[1][1] / kv[1][0], kv[0]))
        return [(grid, count, q / count) for _, (count, q, grid) in order]

    def __getstate__(self) -> dict:
        """Pickles without the memory-mapped split: merge into an accumulator of the same split."""
        return {k: v for k, v in self.__dict__.items() if k != "examples"}
