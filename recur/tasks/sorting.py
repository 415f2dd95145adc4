"""Sorting: rewrite a sequence of small integers in ascending order, in place.

Tokens: 0 = PAD, value v (0..values-1) -> token v + 1; vocab_size = values + 1, seq_len = max_length.
A sequence is left-aligned and padded with 0; its label holds the same values sorted at the same
positions, with label 0 (unsupervised) on the padding. Longer sequences need more sequential
computation, so `score` reports exact accuracy per length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import RecurError
from .base import Split, Task
from .common import derive_seed, read_lines

_REDRAWS = 100  # rounds of redrawing sequences that hit `exclude` before giving up


def _check(min_length: int, max_length: int, values: int) -> None:
    """RecurError for settings no sequence can satisfy (tokens are uint8, so values <= 255)."""
    if min_length < 1:
        raise RecurError(f"data.sorting.min_length must be >= 1, got {min_length}")
    if max_length < min_length:
        raise RecurError(f"data.sorting.max_length ({max_length}) must be >= min_length ({min_length})")
    if not 2 <= values <= 255:
        raise RecurError(f"data.sorting.values must be in 2..255, got {values}")


def _tokens(lengths: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Value rows [n, max_length] cut to their lengths -> input tokens uint8 (value + 1, then PAD)."""
    keep = np.arange(values.shape[1]) < lengths[:, None]
    return np.where(keep, values + 1, 0).astype(np.uint8)


def sort_labels(inputs: np.ndarray) -> np.ndarray:
    """Input tokens [n, L] -> labels: each row's values ascending at the same positions, PAD kept."""
    t = np.asarray(inputs).astype(np.int16)
    ordered = np.sort(np.where(t == 0, 256, t), axis=1)  # PAD sorts last, so it stays where it was
    return np.where(ordered == 256, 0, ordered).astype(np.uint8)


def generate(count: int, seed: int, min_length: int, max_length: int, values: int,
             exclude: set[bytes] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` random sequences: (inputs uint8 [count, max_length], labels, lengths int32 [count]).

    Lengths are uniform in [min_length, max_length], values uniform in 0..values-1; repeats are
    allowed, but no input's bytes are in `exclude`. Same arguments, same bytes.
    """
    _check(min_length, max_length, values)
    rng = np.random.default_rng(seed)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        lengths = rng.integers(min_length, max_length + 1, size=n)
        return lengths, _tokens(lengths, rng.integers(0, values, size=(n, max_length)))

    lengths, inputs = draw(max(count, 0))
    todo = np.arange(len(inputs))
    for round_ in range(_REDRAWS + 1):
        if not exclude:
            break
        todo = todo[np.array([inputs[i].tobytes() in exclude for i in todo], bool)]
        if not todo.size:
            break
        if round_ == _REDRAWS:
            raise RecurError(f"sorting generation: {todo.size} of {count} sequences still repeat excluded "
                             f"ones after {_REDRAWS} redraws; lengths {min_length}..{max_length} over "
                             f"{values} values leave too few distinct sequences: widen them or ask for fewer")
        # redraw the length too, so the kept sequences are a plain rejection sample
        lengths[todo], inputs[todo] = draw(todo.size)
    return inputs, sort_labels(inputs), lengths.astype(np.int32)


# --- text -----------------------------------------------------------------------------------------


def render(tokens: np.ndarray) -> str:
    """The values space-separated; trailing PAD is omitted, a PAD inside shows as `_`."""
    t = np.asarray(tokens).reshape(-1).tolist()
    while t and t[-1] == 0:
        t.pop()
    return " ".join(str(v - 1) if v else "_" for v in t)


def parse_sequence(text: str, info: dict) -> np.ndarray:
    """Numbers separated by spaces or commas -> input tokens uint8 [max_length] (PAD after the values)."""
    lo, hi, values = info["min_length"], info["max_length"], info["values"]
    items = [s for s in re.split(r"[\s,]+", text.strip()) if s]
    numbers = []
    for pos, item in enumerate(items, 1):
        try:
            v = int(item)
        except ValueError:
            raise RecurError(f"sequence: item {pos} ({item!r}) is not an integer") from None
        if not 0 <= v < values:
            raise RecurError(f"sequence: value {v} at position {pos} is outside 0..{values - 1}")
        numbers.append(v)
    if not lo <= len(numbers) <= hi:
        raise RecurError(f"sequence has {len(numbers)} numbers, expected {lo}..{hi}")
    tokens = np.zeros(hi, np.uint8)
    tokens[: len(numbers)] = np.array(numbers, np.int64) + 1
    return tokens


# --- dataset --------------------------------------------------------------------------------------


def _split(inputs: np.ndarray, labels: np.ndarray, lengths: np.ndarray) -> Split:
    """One split, each sequence its own puzzle and group."""
    n = len(inputs)
    return {
        "inputs": inputs,
        "labels": labels,
        "puzzle_ids": np.zeros(n, np.int32),
        "puzzle_index": np.arange(n + 1, dtype=np.int64),
        "group_index": np.arange(n + 1, dtype=np.int64),
        "lengths": lengths,  # per example, for accuracy by length
    }


@dataclass
class SortingData:
    """Sort a sequence of integers in place (shorter sequences are padded)."""

    min_length: int = 4
    """Shortest sequence."""
    max_length: int = 16
    """Longest sequence (= seq_len)."""
    values: int = 10
    """Numbers are drawn from 0..values-1."""
    train_size: int = 20000
    """Training sequences."""
    test_size: int = 1000
    """Held-out sequences (lengths drawn like the training ones)."""

    def check(self) -> None:
        """RecurError naming the first setting no dataset can be built from."""
        _check(self.min_length, self.max_length, self.values)
        if self.train_size <= 0:
            raise RecurError(f"data.sorting.train_size must be > 0, got {self.train_size}")
        if self.test_size < 0:
            raise RecurError(f"data.sorting.test_size must be >= 0, got {self.test_size}")


def build_splits(cfg: SortingData, seed: int) -> tuple[dict[str, Split], dict]:
    """({"train": split, "test": split}, info), byte-identical per (cfg, seed); test avoids train inputs."""
    cfg.check()
    shape = (cfg.min_length, cfg.max_length, cfg.values)
    train = generate(cfg.train_size, derive_seed(seed, "train"), *shape)
    test = generate(cfg.test_size, derive_seed(seed, "test"), *shape, exclude={row.tobytes() for row in train[0]})
    info = {"vocab_size": cfg.values + 1, "seq_len": cfg.max_length, "num_puzzle_ids": 1,
            "min_length": cfg.min_length, "max_length": cfg.max_length, "values": cfg.values}
    return {"train": _split(*train), "test": _split(*test)}, info


class Sorting(Task):
    """Sorting as a recur task."""

    name = "sorting"
    config = SortingData

    def build(self, cfg: SortingData, seed: int) -> tuple[dict[str, Split], dict]:
        return build_splits(cfg, seed)

    def parse(self, text: str, info: dict) -> np.ndarray:
        return parse_sequence(text, info)

    def read_puzzles(self, path: Path, info: dict) -> list[tuple[int, str]]:
        """One sequence per line; blank lines and lines starting with # are skipped."""
        lines = read_lines(path)
        return [(n, s) for n, s in enumerate((line.strip() for line in lines), 1) if s and not s.startswith("#")]

    def render(self, tokens: np.ndarray, info: dict) -> str:
        return render(tokens)

    def verify(self, inputs: np.ndarray, answer: np.ndarray, info: dict) -> bool:
        """Whether the answer holds the input's values in ascending order at the input's value positions.

        Positions past the input's length are not checked: their label is 0 (unsupervised), so a
        model's output there is arbitrary.
        """
        p = np.asarray(inputs).reshape(-1)
        a = np.asarray(answer).reshape(-1)
        if a.shape != p.shape:
            return False
        held = p != 0
        return bool(np.array_equal(a[held], np.sort(p[held])))

    def score(self, inputs: np.ndarray, labels: np.ndarray, answers: np.ndarray, info: dict
              ) -> dict[str, np.ndarray]:
        """exact_len_{n}: 1/0 exact match on examples of length n, NaN on the others; one key per
        length in the batch."""
        lab = np.asarray(labels)
        exact = ((np.asarray(answers) == lab) | (lab == 0)).all(1).astype(np.float64)
        lengths = (np.asarray(inputs) != 0).sum(1)
        return {f"exact_len_{n}": np.where(lengths == n, exact, np.nan) for n in np.unique(lengths).tolist()}
