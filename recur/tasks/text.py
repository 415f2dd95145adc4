"""Text for the language models: tokenizers, corpora, and fixed windows in recur.data's layout.

Token ids: 0 = PAD (recur's losses ignore label 0), 1 = BOS, 2 = EOS, then the tokenizer's own ids shifted by 3:
byte b -> b + 3 (the default byte tokenizer, vocabulary 259, takes any bytes), or HF `tokenizers` id t -> t + 3
for a tokenizer JSON file (optional package `tokenizers`). Every document is BOS + tokens + EOS.

Corpora (data.text.source), all read offline:
  stdlib           this Python's own standard-library sources, a fixed list of files present in CPython
                   3.10-3.13 (STDLIB_TRAIN, STDLIB_TEST: the split is by file); their bytes differ between Python
                   versions, so info records the corpus's sha256
  PATH.txt / any   one document; the last test_fraction of its tokens is the test split
  PATH.jsonl       one JSON object per line, the document in field `text_field`
  hf:NAME[:CONFIG] a `datasets` dataset already in the local cache (optional package `datasets`)
A corpus becomes windows of context+1 tokens, stride context: inputs = window[:-1], labels = window[1:] (uint16
when the vocabulary exceeds 255), each window its own puzzle and group.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import RecurError
from .base import Split, Task
from .common import read_lines

PAD, BOS, EOS = 0, 1, 2
SPECIALS = {"<pad>": PAD, "<bos>": BOS, "<eos>": EOS}
OFFSET = len(SPECIALS)

STDLIB_TRAIN = (
    "abc.py", "argparse.py", "ast.py", "base64.py", "bisect.py", "calendar.py", "codecs.py", "colorsys.py",
    "contextlib.py", "copy.py", "csv.py", "dataclasses.py", "datetime.py", "difflib.py", "enum.py", "fnmatch.py",
    "fractions.py", "functools.py", "getopt.py", "gettext.py", "glob.py", "gzip.py", "heapq.py", "hmac.py",
    "inspect.py", "ipaddress.py", "keyword.py", "linecache.py", "numbers.py", "operator.py", "optparse.py",
    "shutil.py", "tarfile.py", "threading.py", "tokenize.py", "traceback.py", "typing.py", "uuid.py", "warnings.py",
    "weakref.py",
)
"""Training files of the `stdlib` corpus (single-file modules in every CPython from 3.10 to 3.13)."""
STDLIB_TEST = ("pprint.py", "queue.py", "random.py", "shlex.py", "statistics.py", "string.py", "textwrap.py")
"""Held-out files of the `stdlib` corpus."""


# --------------------------------------------------------------------------- tokenizers


class ByteTokenizer:
    """Bytes as tokens: byte b -> b + 3. Any bytes are valid input."""

    name = "byte"
    vocab_size = 256 + OFFSET

    def encode(self, data: bytes | str, source: str = "text") -> np.ndarray:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        return np.frombuffer(raw, dtype=np.uint8).astype(np.int64) + OFFSET

    def decode(self, ids) -> str:
        """Text of the ids; special tokens are dropped, invalid UTF-8 becomes U+FFFD."""
        raw = bytes(int(i) - OFFSET for i in np.asarray(ids).reshape(-1) if int(i) >= OFFSET)
        return raw.decode("utf-8", errors="replace")

    def info(self) -> dict:
        return {"kind": "byte", "vocab_size": self.vocab_size}


class HFTokenizer:
    """A Hugging Face `tokenizers` JSON file; its id t is recur's t + 3. Reads text only (UTF-8)."""

    def __init__(self, path: str | Path):
        try:
            import tokenizers
        except ImportError:
            raise RecurError(f"reading tokenizer file {path} needs the `tokenizers` package: "
                             f"pip install tokenizers") from None
        self.path = Path(path)
        try:
            self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()
            self.tok = tokenizers.Tokenizer.from_file(str(self.path))
        except OSError as e:
            raise RecurError(f"cannot read tokenizer file {path}: {e.strerror or e}") from None
        except Exception as e:  # tokenizers raises its own Exception subclass on malformed files
            raise RecurError(f"{path} is not a tokenizers JSON file: {str(e).splitlines()[0]}") from None
        self.name = self.path.name
        self.vocab_size = self.tok.get_vocab_size() + OFFSET

    def encode(self, data: bytes | str, source: str = "text") -> np.ndarray:
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise RecurError(f"{source} is not UTF-8 text (byte offset {e.start}); the tokenizer file reads "
                                 f"text, data.text.tokenizer=byte reads any bytes") from None
        return np.asarray(self.tok.encode(data, add_special_tokens=False).ids, dtype=np.int64) + OFFSET

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) - OFFSET for i in np.asarray(ids).reshape(-1) if int(i) >= OFFSET])

    def info(self) -> dict:
        return {"kind": "file", "name": self.name, "sha256": self.sha256, "vocab_size": self.vocab_size}


def load_tokenizer(spec: str) -> ByteTokenizer | HFTokenizer:
    """`byte`, or the path of a tokenizers JSON file."""
    return ByteTokenizer() if spec == "byte" else HFTokenizer(spec)


def check_tokenizer(tokenizer, info: dict, where: str = "the checkpoint") -> None:
    """RecurError (one line) unless `tokenizer` is the one the model behind `info` (a dataset's info) was trained
    with: same vocabulary size, and for a file the same bytes."""
    want = info.get("tokenizer", {})
    if tokenizer.vocab_size != info["vocab_size"]:
        raise RecurError(f"tokenizer {tokenizer.name} has a vocabulary of {tokenizer.vocab_size} tokens "
                         f"(3 specials included) but {where} has {info['vocab_size']}")
    mine = tokenizer.info()
    if want and (want.get("kind") != mine["kind"] or want.get("sha256") != mine.get("sha256")):
        raise RecurError(f"tokenizer {tokenizer.name} is not the one {where} was trained with "
                         f"({want.get('name', want.get('kind'))})")


def info_tokenizer(info: dict) -> ByteTokenizer:
    """The tokenizer a dataset's info names, when it needs no file (the byte tokenizer)."""
    kind = info.get("tokenizer", {}).get("kind", "byte")
    if kind != "byte":
        raise RecurError(f"this model reads tokenizer file {info['tokenizer'].get('name')}; load it with "
                         f"recur.tasks.text.load_tokenizer(PATH) (check it with check_tokenizer)")
    return ByteTokenizer()


# --------------------------------------------------------------------------- corpora


def stdlib_dir() -> Path:
    """This Python's standard-library source directory."""
    return Path(os.__file__).parent


def read_documents(source: str, text_field: str = "text") -> list[tuple[str, bytes]]:
    """(name, bytes) of every document of a non-stdlib source, in order."""
    if source.startswith("hf:"):
        return _hf_documents(source, text_field)
    path = Path(source)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RecurError(f"cannot read corpus {source}: {e.strerror or e}") from None
    if path.suffix != ".jsonl":
        return [(source, raw)]
    docs = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RecurError(f"{source} line {n} is not JSON: {e}") from None
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
            raise RecurError(f"{source} line {n} has no string field '{text_field}' (data.text.text_field)")
        docs.append((f"{source}:{n}", row[text_field].encode("utf-8")))
    return docs


def _hf_documents(source: str, text_field: str) -> list[tuple[str, bytes]]:
    try:
        import datasets
    except ImportError:
        raise RecurError(f"data.text.source={source} needs the `datasets` package: pip install datasets") from None
    name, _, config = source[3:].partition(":")
    try:
        rows = datasets.load_dataset(name, config or None, split="train")
    except Exception as e:  # datasets raises many types (missing dataset, no network, bad config)
        raise RecurError(f"cannot load dataset {source}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if text_field not in rows.column_names:
        raise RecurError(f"dataset {source} has no column '{text_field}' (columns: {', '.join(rows.column_names)})")
    return [(f"{source}:{i}", str(t).encode("utf-8")) for i, t in enumerate(rows[text_field])]


def encode_documents(tokenizer, docs: list[tuple[str, bytes]]) -> np.ndarray:
    """BOS + tokens + EOS of every document, concatenated (int64)."""
    parts = [np.concatenate(([BOS], tokenizer.encode(raw, name), [EOS])) for name, raw in docs]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def token_dtype(vocab_size: int):
    """The smallest unsigned dtype holding every token id."""
    return np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.uint32


def windows(tokens: np.ndarray, context: int, dtype, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows of context+1 tokens (stride context, so every token is predicted once):
    (inputs [N, context], labels [N, context]) with labels the inputs shifted by one."""
    if len(tokens) < context + 1:
        raise RecurError(f"{source} has {len(tokens)} tokens, fewer than one window of data.text.context + 1 = "
                         f"{context + 1}; use a longer corpus or a shorter context")
    n = (len(tokens) - 1) // context
    idx = np.arange(n)[:, None] * context + np.arange(context + 1)[None, :]
    w = tokens[idx].astype(dtype)
    return w[:, :-1], w[:, 1:]


def lm_split(inputs: np.ndarray, labels: np.ndarray) -> Split:
    """A split in recur.data's layout, each example its own puzzle and group."""
    n = len(inputs)
    return {"inputs": inputs, "labels": labels, "puzzle_ids": np.zeros(n, np.int32),
            "puzzle_index": np.arange(n + 1, dtype=np.int64), "group_index": np.arange(n + 1, dtype=np.int64)}


def exact_match(logits, labels) -> np.ndarray:
    """[B] bool: every supervised label (label != 0) is the argmax of its logits [B, L, V]. With answer-only
    labels this equals greedy decoding producing the whole answer."""
    pred = np.asarray(logits.argmax(-1) if hasattr(logits, "argmax") else logits)
    lab = np.asarray(labels)
    return ((pred == lab) | (lab == PAD)).all(-1)


@dataclass
class TextData:
    """A text corpus as fixed windows for next-token training."""

    source: str = "stdlib"
    """`stdlib` (this Python's standard-library sources, fixed file lists), a text file, a .jsonl file, or
    hf:NAME[:CONFIG] (a locally cached `datasets` dataset)."""
    tokenizer: str = "byte"
    """`byte` (vocabulary 259, any bytes) or the path of a tokenizers JSON file (vocabulary = its size + 3)."""
    context: int = 256
    """Tokens per training window (= seq_len)."""
    text_field: str = "text"
    """The document field of .jsonl lines and `datasets` rows."""
    test_fraction: float = 0.1
    """Sources other than stdlib: the last fraction of the token stream is the test split (0 = no test split)."""

    def check(self) -> None:
        if self.context < 1:
            raise RecurError(f"data.text.context must be >= 1, got {self.context}")
        if not 0 <= self.test_fraction < 1:
            raise RecurError(f"data.text.test_fraction must be in [0, 1), got {self.test_fraction}")


def build_text(cfg: TextData) -> tuple[dict[str, Split], dict]:
    cfg.check()
    tok = load_tokenizer(cfg.tokenizer)
    if cfg.source == "stdlib":
        base = stdlib_dir()
        parts = {}
        for split, names in (("train", STDLIB_TRAIN), ("test", STDLIB_TEST)):
            missing = [n for n in names if not (base / n).is_file()]
            if missing:
                raise RecurError(f"the stdlib corpus needs {base / missing[0]}, which this Python lacks")
            parts[split] = [(str(base / n), (base / n).read_bytes()) for n in names]
        docs = parts["train"] + parts["test"]
        streams = {k: encode_documents(tok, v) for k, v in parts.items()}
    else:
        docs = read_documents(cfg.source, cfg.text_field)
        stream = encode_documents(tok, docs)
        cut = len(stream) - int(len(stream) * cfg.test_fraction)
        streams = {"train": stream[:cut], "test": stream[cut:]}
    if not any(raw for _, raw in docs):
        raise RecurError(f"corpus {cfg.source} is empty")
    dtype = token_dtype(tok.vocab_size)
    splits = {}
    for name, stream in streams.items():
        if name == "test" and cfg.source != "stdlib" and cfg.test_fraction == 0:
            empty = np.zeros((0, cfg.context), dtype)
            splits[name] = lm_split(empty, empty.copy())
            continue
        splits[name] = lm_split(*windows(stream, cfg.context, dtype, f"corpus {cfg.source} ({name} split)"))
    digest = hashlib.sha256()
    for name, raw in docs:
        digest.update(hashlib.sha256(raw).digest())
    info = {"vocab_size": tok.vocab_size, "seq_len": cfg.context, "num_puzzle_ids": 1, "tokenizer": tok.info(),
            "corpus_sha256": digest.hexdigest(), "tokens": {k: len(v) for k, v in streams.items()}}
    return splits, info


class Text(Task):
    """A text corpus as a recur task; `parse` turns a prompt into tokens, `render` tokens into text."""

    name = "text"
    text = True
    config = TextData

    def build(self, cfg: TextData, seed: int) -> tuple[dict[str, Split], dict]:
        return build_text(cfg)

    def parse(self, text: str, info: dict) -> np.ndarray:
        """A prompt: BOS + its tokens."""
        return np.concatenate(([BOS], info_tokenizer(info).encode(text))).astype(np.int64)

    def read_puzzles(self, path: Path, info: dict) -> list[tuple[int, str]]:
        """One prompt per line; blank lines are skipped."""
        return [(n, line) for n, line in enumerate(read_lines(path), 1) if line.strip()]

    def render(self, tokens: np.ndarray, info: dict) -> str:
        return info_tokenizer(info).decode(tokens)
