"""Tokenizers, corpora and windows (recur.tasks.text), the synthetic text tasks (recur.tasks.synthetic), and the
one-line errors for bad text input."""

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

from recur.config import DataConfig, load_config
from recur.data import Dataset, prepare
from recur.errors import RecurError
from recur.tasks import REGISTRY
from recur.tasks.synthetic import AdditionData, ParityData, SortingTextData
from recur.tasks.text import (BOS, EOS, OFFSET, STDLIB_TEST, STDLIB_TRAIN, ByteTokenizer, TextData,
                              build_text, check_tokenizer, exact_match, load_tokenizer, stdlib_dir, windows)

HAS_TOKENIZERS = importlib.util.find_spec("tokenizers") is not None


def one_line(excinfo, *needles):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, msg


# --------------------------------------------------------------------------- tokenizers


def test_byte_tokenizer_round_trips_text_and_takes_any_bytes():
    tok = ByteTokenizer()
    text = "déjà vu — 日本 \n\t"
    ids = tok.encode(text)
    assert ids.min() >= OFFSET and ids.max() < tok.vocab_size == 259
    assert tok.decode(ids) == text
    raw = bytes(range(256))
    assert bytes(int(i) - OFFSET for i in tok.encode(raw)) == raw
    assert tok.decode([BOS, *tok.encode("ab"), EOS, 0]) == "ab"  # specials are dropped


def test_missing_tokenizers_package_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import tokenizers now raises ImportError
    with pytest.raises(RecurError) as e:
        load_tokenizer(str(tmp_path / "tok.json"))
    one_line(e, "tok.json", "pip install tokenizers")


@pytest.fixture
def tokenizer_file(tmp_path):
    if not HAS_TOKENIZERS:
        pytest.skip("the optional `tokenizers` package is not installed")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["the cat sat on the mat", "a dog and a cat"] * 20,
                            trainers.BpeTrainer(vocab_size=60, special_tokens=["[UNK]"]))
    path = tmp_path / "tok.json"
    tok.save(str(path))
    return path


def test_tokenizer_file_round_trip_and_vocabulary_check(tokenizer_file, tmp_path):
    tok = load_tokenizer(str(tokenizer_file))
    ids = tok.encode("the cat sat")
    assert ids.min() >= OFFSET and tok.decode(ids).replace(" ", "") == "thecatsat"
    info = {"vocab_size": tok.vocab_size, "tokenizer": tok.info()}
    check_tokenizer(tok, info)
    with pytest.raises(RecurError) as e:
        check_tokenizer(tok, {"vocab_size": tok.vocab_size + 1}, "run X")
    one_line(e, "vocabulary", "run X")
    with pytest.raises(RecurError) as e:
        check_tokenizer(tok, {"vocab_size": tok.vocab_size, "tokenizer": {"kind": "file", "sha256": "0", "name": "o"}})
    one_line(e, "not the one")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"caf\xe9 au lait")
    with pytest.raises(RecurError) as e:
        build_text(TextData(source=str(bad), tokenizer=str(tokenizer_file), context=2))
    one_line(e, "latin1.txt", "byte offset 3")


def test_byte_tokenizer_vocabulary_check():
    with pytest.raises(RecurError) as e:
        check_tokenizer(ByteTokenizer(), {"vocab_size": 300})
    one_line(e, "259", "300")


# --------------------------------------------------------------------------- corpora and windows


def test_windows_are_shifted_by_one_with_stride_context():
    stream = np.arange(23)
    inputs, labels = windows(stream, 5, np.uint16, "t")
    assert inputs.shape == labels.shape == (4, 5) and inputs.dtype == np.uint16
    assert np.array_equal(labels[:, :-1], inputs[:, 1:])
    assert np.array_equal(inputs[:, 0], [0, 5, 10, 15]) and labels[-1, -1] == 20


def test_stdlib_corpus_is_fixed_split_by_file_and_fingerprinted():
    assert not set(STDLIB_TRAIN) & set(STDLIB_TEST)
    assert all((stdlib_dir() / n).is_file() for n in STDLIB_TRAIN + STDLIB_TEST)
    cfg = TextData(context=512)
    a, info = build_text(cfg)
    b, info_b = build_text(cfg)
    assert info == info_b and len(info["corpus_sha256"]) == 64
    assert all(np.array_equal(a[s][k], b[s][k]) for s in a for k in a[s])
    train = a["train"]["inputs"]
    assert train.dtype == np.uint16 and train.shape[1] == 512 and len(train) > 1000
    assert info["seq_len"] == 512 and info["vocab_size"] == 259
    first = (stdlib_dir() / STDLIB_TRAIN[0]).read_bytes()[:511]
    assert train[0, 0] == BOS and bytes((train[0, 1:] - OFFSET).astype(np.uint8).tolist()) == first
    assert np.array_equal(a["train"]["labels"][0, :-1], train[0, 1:])


def test_text_and_jsonl_sources(tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_bytes(b"\xff\x00 binary is fine for bytes " * 10)
    splits, info = build_text(TextData(source=str(txt), context=16, test_fraction=0.25))
    n = info["tokens"]["train"] + info["tokens"]["test"]
    assert n == 2 + 10 * 28 and info["tokens"]["test"] == int(n * 0.25)
    assert len(splits["test"]["inputs"]) == (info["tokens"]["test"] - 1) // 16
    jl = tmp_path / "c.jsonl"
    jl.write_text("\n".join(json.dumps({"body": f"document number {i}"}) for i in range(20)) + "\n")
    splits, info = build_text(TextData(source=str(jl), context=8, text_field="body", test_fraction=0))
    assert len(splits["test"]["inputs"]) == 0 and info["tokens"]["train"] == sum(2 + len(f"document number {i}")
                                                                               for i in range(20))


@pytest.mark.parametrize("write, cfg, needles", [
    (lambda p: p.write_bytes(b""), dict(), ["empty"]),
    (lambda p: p.write_text("tiny"), dict(context=16), ["6 tokens", "17"]),
    (lambda p: p.write_text('{"text": "ok"}\nnot json\n'), dict(suffix=".jsonl"), ["line 2", "not JSON"]),
    (lambda p: p.write_text('{"other": 1}\n'), dict(suffix=".jsonl"), ["line 1", "'text'"]),
    (None, dict(), ["cannot read corpus"]),
])
def test_bad_corpora_are_one_line_errors(tmp_path, write, cfg, needles):
    cfg = dict(cfg)
    path = tmp_path / ("corpus" + cfg.pop("suffix", ".txt"))
    if write:
        write(path)
    with pytest.raises(RecurError) as e:
        build_text(TextData(source=str(path), **{"context": 4, "test_fraction": 0, **cfg}))
    one_line(e, *needles)


def test_missing_datasets_package_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(RecurError) as e:
        build_text(TextData(source="hf:some/set"))
    one_line(e, "pip install datasets")


def test_text_settings_are_config_sections_and_checked():
    cfg = load_config(None, ["model.arch=lm", "data.task=text", "data.text.context=64", "data.addition.max_digits=3"])
    assert cfg.data.text.context == 64 and cfg.data.addition.max_digits == 3
    with pytest.raises(RecurError) as e:
        load_config(None, ["model.arch=lm", "data.task=text", "data.text.context=0"])
    one_line(e, "data.text.context")
    with pytest.raises(RecurError) as e:
        load_config(None, ["model.arch=lm", "data.task=parity", "data.parity.max_length=1", "data.parity.min_length=3"])
    one_line(e, "data.parity.max_length")
    with pytest.raises(RecurError) as e:  # a text task needs a language model, a puzzle task a puzzle model
        load_config(None, ["data.task=text"])
    one_line(e, "model.arch=lm")
    with pytest.raises(RecurError) as e:
        load_config(None, ["model.arch=lm", "data.task=sudoku"])
    one_line(e, "puzzle task")


# --------------------------------------------------------------------------- synthetic tasks


SMALL = {"addition": AdditionData(1, 3, 300, 50), "parity": ParityData(2, 8, 300, 50),
         "sorting_text": SortingTextData(2, 6, 300, 50)}


@pytest.mark.parametrize("name", list(SMALL))
def test_synthetic_layout_supervises_only_the_answer(name):
    task = REGISTRY[name]
    splits, info = task.build(SMALL[name], seed=0)
    tok = ByteTokenizer()
    for split in ("train", "test"):
        x, y = splits[split]["inputs"], splits[split]["labels"]
        assert x.shape == y.shape and x.shape[1] == info["seq_len"] and x.dtype == np.uint16
        for row_x, row_y in zip(x[:20], y[:20]):
            text = tok.decode(row_x)
            prompt, answer = text.split("=")
            assert answer == task.solve(prompt)
            sup = row_y != 0
            assert tok.decode(row_y[sup]) == answer and row_y[sup][-1] == EOS  # the answer and its EOS only
            first = np.flatnonzero(sup)[0]
            assert first == len(prompt) + 1 and np.array_equal(row_y[sup][:-1], row_x[first + 1:first + 1 + len(answer)])
            assert task.verify(row_x, row_y, info)
    assert not {r.tobytes() for r in splits["test"]["inputs"]} & {r.tobytes() for r in splits["train"]["inputs"]}
    again, _ = task.build(SMALL[name], seed=0)
    assert all(np.array_equal(again[s][k], splits[s][k]) for s in splits for k in splits[s])


def test_teacher_forced_exact_match_is_greedy_answer_match():
    task = REGISTRY["addition"]
    splits, info = task.build(SMALL["addition"], 0)
    labels = torch.as_tensor(splits["test"]["labels"].astype(np.int64))
    logits = torch.nn.functional.one_hot(labels, 259).float()
    assert exact_match(logits, labels).all()
    row = np.flatnonzero(labels[0].numpy())[0]
    logits[0, row] = torch.nn.functional.one_hot(torch.tensor(BOS + 60), 259).float()  # one wrong answer digit
    got = exact_match(logits, labels)
    assert not got[0] and got[1:].all()
    preds = logits.argmax(-1).numpy()
    assert not task.verify(splits["test"]["inputs"][0], preds[0], info) and task.verify(splits["test"]["inputs"][1],
                                                                                        preds[1], info)
    scores = task.score(splits["test"]["inputs"], labels.numpy(), preds, info)
    assert set(scores) <= {"exact_1", "exact_2", "exact_3"}


def test_synthetic_parse_and_errors():
    assert ByteTokenizer().decode(REGISTRY["addition"].parse("12+3", {})) == "12+3="
    assert REGISTRY["parity"].parse("0110=", {})[0] == BOS
    with pytest.raises(RecurError) as e:
        REGISTRY["addition"].parse("12*3", {})
    one_line(e, "12*3", "12+345")
    with pytest.raises(RecurError) as e:
        REGISTRY["parity"].build(ParityData(2, 2, 300, 10), 0)  # only 4 distinct prompts
    one_line(e, "outside the training set")


def test_prepared_text_dataset_round_trip(tmp_path):
    cfg = DataConfig(task="sorting_text", sorting_text=SortingTextData(2, 4, 100, 20))
    ds = Dataset(prepare(cfg, tmp_path / "d"))
    batch = ds.splits["train"].batch(np.arange(3))
    assert batch["inputs"].shape == (3, ds.info["seq_len"]) and ds.info["tokenizer"]["kind"] == "byte"
    assert (batch["labels"][:, :-1][batch["labels"][:, :-1] != 0] > 0).all()
