"""What the rest of recur needs from a task: build its dataset, read and show puzzles.

A task knows nothing about models or training. Its `build` returns plain numpy arrays per
split in the on-disk layout of recur.data:

  inputs        uint8 [N_examples, seq_len]   tokens; 0 = PAD
  labels        uint8 [N_examples, seq_len]   target tokens; 0 = ignored by the loss
  puzzle_ids    int32 [N_puzzles]             row of the puzzle-embedding table
  puzzle_index  int64 [N_puzzles + 1]         examples of puzzle p: puzzle_index[p]:puzzle_index[p+1]
  group_index   int64 [N_groups + 1]          puzzles of group g (a base puzzle + its augmentations)

plus `info`, a JSON-able dict with at least vocab_size, seq_len and num_puzzle_ids.

A task with `batch_time = True` (ARC) stores no inputs/labels: its splits hold the index arrays and
whatever compact files it needs, and `examples` makes each batch's tokens when it is drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

Split = dict[str, np.ndarray]


class Task:
    """Base class of the task registry entries (see recur.tasks.REGISTRY)."""

    name: str = ""
    text: bool = False
    """Sequences for the language models (model.arch=lm: inputs and labels shifted by one), not puzzles."""
    config: type
    """The task's data settings, a dataclass with field docstrings and a `check()` that raises RecurError on
    settings no dataset can be built from; it becomes the config section `data.<name>`."""

    batch_time: bool = False
    """Whether the task makes its examples' tokens when a batch is drawn (see `examples`) instead of storing
    inputs.npy and labels.npy."""

    def examples(self, path: Path, split, info: dict):
        """For a batch-time task: the object that makes the examples of the recur.data.Split `split` (files in
        `path`): `batch(idx, epochs=None, seed=0)` -> the dict Split.batch returns, where `epochs` [b] is the
        training sampler's epoch of each row (None outside training) and `seed` the run seed."""
        raise NotImplementedError

    def build(self, cfg, seed: int) -> tuple[dict[str, Split], dict]:
        """Build {"train": Split, "test": Split} and the info dict from the task's settings (a `config`)."""
        raise NotImplementedError

    def parse(self, text: str, info: dict) -> np.ndarray:
        """One puzzle as text -> input tokens [seq_len]; RecurError naming the problem if malformed."""
        raise NotImplementedError

    def read_puzzles(self, path: Path, info: dict) -> list[tuple[int, str]]:
        """The puzzles in a file (one per line, or the task's CSV layout) as (line number where each starts,
        text), so that an error in one can name its line."""
        raise NotImplementedError

    def render(self, tokens: np.ndarray, info: dict) -> str:
        """Tokens [seq_len] (an input or an answer) -> a human-readable grid."""
        raise NotImplementedError

    def verify(self, inputs: np.ndarray, answer: np.ndarray, info: dict) -> bool:
        """Whether `answer` tokens legally solve `inputs` (may differ from the stored label)."""
        raise NotImplementedError

    def evaluator(self, split, info: dict):
        """An accumulator for scores that span examples (ARC's vote over augmented versions), fed by evaluation
        with add(example indices [b], answer tokens [b, L], sigmoid of the final halting score [b]) and combined
        over ranks with merge(other); None (the default): the per-example metrics say everything."""
        return None

    def evaluated(self, acc) -> dict[str, float]:
        """The scores of a fed `evaluator()` accumulator."""
        raise NotImplementedError

    def score(self, inputs: np.ndarray, labels: np.ndarray, answers: np.ndarray, info: dict) -> dict[str, np.ndarray]:
        """Task metrics beyond exact/token accuracy for a batch [B, L]: {name: float [B]}, NaN where a
        metric does not apply to an example. Evaluation reports the mean over examples where it applies."""
        return {}
