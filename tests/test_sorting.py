"""Sorting task: generation, exclusion, text, verification, per-length scores and dataset splits."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from recur.tasks.sorting import SortingData
from recur.errors import RecurError
from recur.tasks import sorting as so

INFO = {"vocab_size": 11, "seq_len": 8, "num_puzzle_ids": 1, "min_length": 2, "max_length": 8, "values": 10}
TASK = so.Sorting()


def test_generated_labels_are_the_sorted_inputs_with_padding_kept():
    inputs, labels, lengths = so.generate(500, seed=1, min_length=2, max_length=8, values=10)
    assert inputs.shape == labels.shape == (500, 8) and inputs.dtype == labels.dtype == np.uint8
    assert lengths.dtype == np.int32 and lengths.min() == 2 and lengths.max() == 8
    assert inputs.max() == 10 and labels.max() == 10  # tokens 1..values
    for x, y, n in zip(inputs, labels, lengths):
        assert (x[:n] >= 1).all() and not x[n:].any() and not y[n:].any()
        assert (np.diff(y[:n].astype(int)) >= 0).all()
        assert Counter(x[:n].tolist()) == Counter(y[:n].tolist())
    assert not np.array_equal(inputs, labels)  # random rows are not already sorted


def test_generation_is_deterministic_and_seeded():
    a = so.generate(50, seed=7, min_length=1, max_length=5, values=4)
    b = so.generate(50, seed=7, min_length=1, max_length=5, values=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], so.generate(50, seed=8, min_length=1, max_length=5, values=4)[0])


def test_exclude_is_respected_and_impossible_exclusion_fails_in_one_line():
    # 9 possible sequences (length 2 over 3 values): exclude 5 of them
    everything = {bytes([a + 1, b + 1]) for a in range(3) for b in range(3)}
    banned = set(sorted(everything)[:5])
    inputs, labels, _ = so.generate(200, seed=0, min_length=2, max_length=2, values=3, exclude=banned)
    assert not banned & {row.tobytes() for row in inputs}
    assert np.array_equal(labels, np.sort(inputs, axis=1))
    with pytest.raises(RecurError, match="still repeat excluded") as err:
        so.generate(3, seed=0, min_length=2, max_length=2, values=3, exclude=everything)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("lo, hi, values, match", [
    (5, 4, 10, r"max_length \(4\) must be >= min_length \(5\)"),
    (0, 4, 10, "min_length must be >= 1"),
    (1, 4, 1, "values must be in 2..255"),
    (1, 4, 300, "values must be in 2..255"),
])
def test_inconsistent_settings_are_recur_errors(lo, hi, values, match):
    with pytest.raises(RecurError, match=match):
        so.generate(1, 0, lo, hi, values)
    with pytest.raises(RecurError, match=match):
        so.build_splits(SortingData(min_length=lo, max_length=hi, values=values, train_size=4), 0)


def test_parse_and_render_round_trip():
    tokens = TASK.parse("3, 1 0,9", INFO)
    assert tokens.tolist() == [4, 2, 1, 10, 0, 0, 0, 0]
    assert TASK.render(tokens, INFO) == "3 1 0 9"
    assert np.array_equal(TASK.parse(TASK.render(tokens, INFO), INFO), tokens)
    assert so.render(np.array([2, 0, 3, 0], np.uint8)) == "1 _ 2"  # a PAD inside stays visible


@pytest.mark.parametrize("text, match", [
    ("1 x 3", r"item 2 \('x'\) is not an integer"),
    ("1 2.5", r"item 2 \('2.5'\) is not an integer"),
    ("1 10", "value 10 at position 2 is outside 0..9"),
    ("-1 3", "value -1 at position 1 is outside 0..9"),
    ("4", "has 1 numbers, expected 2..8"),
    ("", "has 0 numbers, expected 2..8"),
    (" ".join(["1"] * 9), "has 9 numbers, expected 2..8"),
])
def test_parse_errors_are_one_line(text, match):
    with pytest.raises(RecurError, match=match) as err:
        TASK.parse(text, INFO)
    assert "\n" not in str(err.value)


def test_read_puzzles_reads_one_sequence_per_line(tmp_path):
    path = tmp_path / "seqs.txt"
    path.write_text("# sequences\n3 1 2\n\n5,4\n")
    assert [t for _, t in TASK.read_puzzles(path, INFO)] == ["3 1 2", "5,4"]


def test_verify_checks_value_positions_only():
    inputs = TASK.parse("3 1 3 0", INFO)
    right = TASK.parse("0 1 3 3", INFO)
    assert TASK.verify(inputs, right, INFO)
    noisy = right.copy()
    noisy[4:] = 7  # unsupervised positions past the length: a model's output there is arbitrary
    assert TASK.verify(inputs, noisy, INFO)
    for wrong in ("0 3 1 3", "0 1 3 4", "0 1 3"):
        assert not TASK.verify(inputs, TASK.parse(wrong, INFO), INFO)
    assert not TASK.verify(inputs, right[:6], INFO)


def test_score_reports_exact_accuracy_per_length_with_nan_elsewhere():
    texts = ["3 1", "2 2 0", "5 4", "9 8 7 6"]
    inputs = np.stack([TASK.parse(t, INFO) for t in texts])
    labels = so.sort_labels(inputs)
    answers = labels.copy()
    answers[2, :2] = answers[2, 1::-1]  # wrong order on the second length-2 example
    answers[1, 5] = 9  # noise on a padded position is ignored
    scores = TASK.score(inputs, labels, answers, INFO)
    assert sorted(scores) == ["exact_len_2", "exact_len_3", "exact_len_4"]
    np.testing.assert_array_equal(scores["exact_len_2"], [1.0, np.nan, 0.0, np.nan])
    np.testing.assert_array_equal(scores["exact_len_3"], [np.nan, 1.0, np.nan, np.nan])
    np.testing.assert_array_equal(scores["exact_len_4"], [np.nan, np.nan, np.nan, 1.0])


def test_build_splits_structure_and_held_out_test():
    cfg = SortingData(min_length=1, max_length=3, values=4, train_size=100, test_size=100)
    splits, info = so.build_splits(cfg, seed=2)
    assert info == {"vocab_size": 5, "seq_len": 3, "num_puzzle_ids": 1, "min_length": 1, "max_length": 3,
                    "values": 4}
    train, test = splits["train"], splits["test"]
    assert train["inputs"].shape == (100, 3) and test["inputs"].shape == (100, 3)
    for split in (train, test):
        n = len(split["inputs"])
        assert np.array_equal(split["group_index"], np.arange(n + 1))
        assert np.array_equal(split["puzzle_index"], np.arange(n + 1)) and not split["puzzle_ids"].any()
        assert np.array_equal(split["lengths"], (split["inputs"] != 0).sum(1))
    # only 84 sequences exist (4 of length 1), so many repeat; no train one may reach the test set
    assert not {r.tobytes() for r in train["inputs"]} & {r.tobytes() for r in test["inputs"]}
    again, _ = TASK.build(cfg, 2)
    for name in splits:
        assert all(np.array_equal(splits[name][k], again[name][k]) for k in splits[name])
    with pytest.raises(RecurError, match="train_size must be > 0"):
        so.build_splits(replace(cfg, train_size=0), 0)
