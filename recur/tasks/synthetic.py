"""Synthetic text tasks where depth matters, for the language models: multi-digit addition, parity, sorting.

Each example is text in the byte tokenizer of recur.tasks.text: BOS + prompt + answer + EOS, padded with PAD, e.g.
`12+345=` `357`, `0110=` `0`, `3142=` `1234`. inputs = sequence[:-1], labels = sequence[1:] with the labels of the
prompt set to 0 (ignored): only the answer and its EOS are supervised, so teacher-forced exact match (every answer
label is the argmax) equals greedy decoding producing the answer (recur.tasks.text.exact_match). Harder examples
(more digits, longer strings) need more sequential computation; `score` reports exact match per difficulty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import RecurError
from .base import Split, Task
from .common import derive_seed, read_lines
from .text import BOS, EOS, ByteTokenizer, lm_split, token_dtype

_REDRAWS = 100  # rounds of redrawing test prompts that repeat training ones before giving up
_TOK = ByteTokenizer()


def _check_range(task: str, lo_key: str, lo: int, hi_key: str, hi: int, floor: int, train: int, test: int) -> None:
    if lo < floor:
        raise RecurError(f"data.{task}.{lo_key} must be >= {floor}, got {lo}")
    if hi < lo:
        raise RecurError(f"data.{task}.{hi_key} ({hi}) must be >= {lo_key} ({lo})")
    if train <= 0 or test < 0:
        raise RecurError(f"data.{task}.train_size must be > 0 and test_size >= 0, got {train} and {test}")


@dataclass
class AdditionData:
    """a+b= with a and b of min_digits..max_digits decimal digits each; the answer is the sum."""

    min_digits: int = 1
    """Fewest digits of an operand."""
    max_digits: int = 4
    """Most digits of an operand."""
    train_size: int = 20000
    """Training examples."""
    test_size: int = 1000
    """Held-out examples (no prompt of the training set)."""

    def check(self) -> None:
        _check_range("addition", "min_digits", self.min_digits, "max_digits", self.max_digits, 1,
                     self.train_size, self.test_size)
        if self.max_digits > 18:
            raise RecurError(f"data.addition.max_digits must be <= 18, got {self.max_digits}")


@dataclass
class ParityData:
    """A string of min_length..max_length bits; the answer is 1 if it holds an odd number of ones, else 0."""

    min_length: int = 2
    """Shortest bit string."""
    max_length: int = 16
    """Longest bit string."""
    train_size: int = 20000
    """Training examples."""
    test_size: int = 1000
    """Held-out examples (no prompt of the training set)."""

    def check(self) -> None:
        _check_range("parity", "min_length", self.min_length, "max_length", self.max_length, 1,
                     self.train_size, self.test_size)


@dataclass
class SortingTextData:
    """A string of min_length..max_length decimal digits; the answer is its digits in ascending order."""

    min_length: int = 2
    """Shortest digit string."""
    max_length: int = 10
    """Longest digit string."""
    train_size: int = 20000
    """Training examples."""
    test_size: int = 1000
    """Held-out examples (no prompt of the training set)."""

    def check(self) -> None:
        _check_range("sorting_text", "min_length", self.min_length, "max_length", self.max_length, 1,
                     self.train_size, self.test_size)


class SyntheticText(Task):
    """What the three tasks share: layout, dataset build, parsing, verification and scoring."""

    text = True

    pattern: str = ""
    """The prompt without its '=' (a regular expression)."""
    example: str = ""
    """A prompt shown in error messages."""

    def draw(self, rng: np.random.Generator, cfg) -> str:
        """One random prompt without '='."""
        raise NotImplementedError

    def solve(self, prompt: str) -> str:
        """The answer to a prompt without '='."""
        raise NotImplementedError

    def level(self, prompt: str) -> int:
        """The difficulty of a prompt (digits or length), for score."""
        raise NotImplementedError

    def max_prompt(self, cfg) -> int:
        raise NotImplementedError

    def max_answer(self, cfg) -> int:
        raise NotImplementedError

    def build(self, cfg, seed: int) -> tuple[dict[str, Split], dict]:
        cfg.check()
        seq_len = self.max_prompt(cfg) + 1 + self.max_answer(cfg) + 1  # BOS + prompt '=' answer EOS, minus one
        train_rng, test_rng = (np.random.default_rng(derive_seed(seed, part)) for part in ("train", "test"))
        train = [self.draw(train_rng, cfg) for _ in range(cfg.train_size)]
        seen, test = set(train), []
        for _ in range(cfg.test_size):
            for _ in range(_REDRAWS):
                prompt = self.draw(test_rng, cfg)
                if prompt not in seen:
                    break
            else:
                raise RecurError(f"{self.name}: cannot draw {cfg.test_size} test prompts outside the training set "
                                 f"after {_REDRAWS} redraws; widen the lengths or ask for fewer examples")
            test.append(prompt)
        info = {"vocab_size": _TOK.vocab_size, "seq_len": seq_len, "num_puzzle_ids": 1, "tokenizer": _TOK.info()}
        return {"train": self.layout(train, seq_len), "test": self.layout(test, seq_len)}, info

    def layout(self, prompts: list[str], seq_len: int) -> Split:
        """Examples in recur.data's layout with answer-only labels."""
        seqs = np.zeros((len(prompts), seq_len + 1), np.int64)
        prompt_len = np.zeros(len(prompts), np.int64)
        for i, p in enumerate(prompts):
            q = f"{p}="
            row = np.concatenate(([BOS], _TOK.encode(q), _TOK.encode(self.solve(p)), [EOS]))
            seqs[i, :len(row)] = row
            prompt_len[i] = len(q)
        dtype = token_dtype(_TOK.vocab_size)
        inputs, labels = seqs[:, :-1].astype(dtype), seqs[:, 1:].copy()
        labels[np.arange(seq_len)[None, :] < prompt_len[:, None]] = 0  # position t < len(prompt) predicts the prompt
        return lm_split(inputs, labels.astype(dtype))

    def _prompt(self, tokens: np.ndarray) -> str:
        """The prompt (without '=') at the start of input tokens."""
        text = _TOK.decode(np.asarray(tokens).reshape(-1))
        return text.split("=", 1)[0]

    def parse(self, text: str, info: dict) -> np.ndarray:
        """A prompt such as `12+345` (a trailing '=' is optional) -> BOS + its tokens + '='."""
        p = text.strip().removesuffix("=")
        if not re.fullmatch(self.pattern, p):
            raise RecurError(f"{self.name}: '{text.strip()}' is not a prompt of this task (expected e.g. {self.example})")
        return np.concatenate(([BOS], _TOK.encode(f"{p}="))).astype(np.int64)

    def read_puzzles(self, path: Path, info: dict) -> list[tuple[int, str]]:
        """One prompt per line; blank lines and lines starting with # are skipped."""
        return [(n, s) for n, s in enumerate((line.strip() for line in read_lines(path)), 1)
                if s and not s.startswith("#")]

    def render(self, tokens: np.ndarray, info: dict) -> str:
        return _TOK.decode(tokens)

    def verify(self, inputs: np.ndarray, answer: np.ndarray, info: dict) -> bool:
        """Whether the predictions `answer` [seq_len] (next-token argmaxes at each position) spell the right answer
        and then EOS after the prompt of `inputs`."""
        p = self._prompt(inputs)
        want = np.concatenate((_TOK.encode(self.solve(p)), [EOS]))
        start = len(p) + 1  # position of '=', whose prediction is the answer's first token
        got = np.asarray(answer).reshape(-1)[start:start + len(want)]
        return len(got) == len(want) and bool(np.array_equal(got, want))

    def score(self, inputs: np.ndarray, labels: np.ndarray, answers: np.ndarray, info: dict) -> dict[str, np.ndarray]:
        """exact_{level}: 1/0 exact match on examples of that difficulty, NaN on the others."""
        lab = np.asarray(labels)
        exact = ((np.asarray(answers) == lab) | (lab == 0)).all(1).astype(np.float64)
        levels = np.array([self.level(self._prompt(row)) for row in np.asarray(inputs)])
        return {f"exact_{n}": np.where(levels == n, exact, np.nan) for n in np.unique(levels).tolist()}


def _digits(rng: np.random.Generator, n: int) -> str:
    """A uniform n-digit number (no leading zero unless n = 1)."""
    lo = 0 if n == 1 else 10 ** (n - 1)
    return str(int(rng.integers(lo, 10**n)))


class Addition(SyntheticText):
    name, config, pattern, example = "addition", AdditionData, r"\d+\+\d+", "12+345"

    def draw(self, rng, cfg: AdditionData) -> str:
        a, b = (int(rng.integers(cfg.min_digits, cfg.max_digits + 1)) for _ in range(2))
        return f"{_digits(rng, a)}+{_digits(rng, b)}"

    def solve(self, prompt: str) -> str:
        a, b = prompt.split("+")
        return str(int(a) + int(b))

    def level(self, prompt: str) -> int:
        return max(len(x) for x in prompt.split("+"))

    def max_prompt(self, cfg: AdditionData) -> int:
        return 2 * cfg.max_digits + 1

    def max_answer(self, cfg: AdditionData) -> int:
        return cfg.max_digits + 1


class Parity(SyntheticText):
    name, config, pattern, example = "parity", ParityData, r"[01]+", "0110"

    def draw(self, rng, cfg: ParityData) -> str:
        n = int(rng.integers(cfg.min_length, cfg.max_length + 1))
        return "".join(map(str, rng.integers(0, 2, n)))

    def solve(self, prompt: str) -> str:
        return str(prompt.count("1") % 2)

    def level(self, prompt: str) -> int:
        return len(prompt)

    def max_prompt(self, cfg: ParityData) -> int:
        return cfg.max_length

    def max_answer(self, cfg: ParityData) -> int:
        return 1


class SortingText(SyntheticText):
    name, config, pattern, example = "sorting_text", SortingTextData, r"\d+", "3142"

    def draw(self, rng, cfg: SortingTextData) -> str:
        n = int(rng.integers(cfg.min_length, cfg.max_length + 1))
        return "".join(map(str, rng.integers(0, 10, n)))

    def solve(self, prompt: str) -> str:
        return "".join(sorted(prompt))

    def level(self, prompt: str) -> int:
        return len(prompt)

    def max_prompt(self, cfg: SortingTextData) -> int:
        return cfg.max_length

    def max_answer(self, cfg: SortingTextData) -> int:
        return cfg.max_length
