"""Prepared datasets on disk, and the deterministic, rank-sharded samplers that read them.

Layout of a prepared directory (arrays memory-mapped when read; see recur.tasks.base):

    metadata.json                 format_version, task, info (vocab_size, seq_len, ...), settings, split sizes,
                                  fingerprint (a hash of every array file)
    train/{inputs,labels,puzzle_ids,puzzle_index,group_index}.npy
    test/...

The same settings and seed give byte-identical files. A run records where its dataset was (absolute
and relative to the run) and its fingerprint, so a run directory can be moved or copied and still finds
its data, and a dataset changed on disk since is recognised (`find`). This module imports nothing from
the models: tasks build arrays, the trainer turns batches into tensors.
A batch-time task (ARC; see recur.tasks.base.Task.batch_time) stores no inputs/labels: its Split
delegates `batch` to the task, passing the sampler's epoch of each row and the run seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .config import DataConfig
from .errors import RecurError
from .tasks import REGISTRY

FORMAT_VERSION = 1
ARRAYS = ("inputs", "labels", "puzzle_ids", "puzzle_index", "group_index")
SPLITS = ("train", "test")


def settings(cfg: DataConfig) -> dict:
    """The settings that determine a dataset's bytes (the task's section and the seed)."""
    return {"task": cfg.task, "seed": cfg.seed, cfg.task: asdict(getattr(cfg, cfg.task))}


def default_dir(cfg: DataConfig | dict, root: str | Path = "data") -> Path:
    """data/<task>-<hash of the settings>, for a DataConfig or its `settings` dict."""
    setting = cfg if isinstance(cfg, dict) else settings(cfg)
    digest = hashlib.sha1(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:10]
    return Path(root) / f"{setting['task']}-{digest}"


def fingerprint(path: Path) -> str:
    """A hash of every array file of a prepared dataset (split/name and bytes, in a fixed order)."""
    h = hashlib.sha256()
    for f in sorted(Path(path).glob("*/*.npy")):
        h.update(f"{f.parent.name}/{f.name}".encode())
        with f.open("rb") as fh:
            while block := fh.read(1 << 24):
                h.update(block)
    return h.hexdigest()[:20]


def prepare(cfg: DataConfig, out: str | Path | None = None) -> Path:
    """Build the dataset `cfg` describes into `out` (or its default directory) unless it is there already.

    An existing directory built from other settings is never overwritten: that is an error.
    """
    out = Path(out or cfg.dir or default_dir(cfg))
    if (out / "metadata.json").exists():
        meta = read_metadata(out)
        if meta["settings"] != json.loads(json.dumps(settings(cfg))):
            raise RecurError(f"{out} holds a dataset built with other settings; choose another directory "
                             f"or delete it (its settings: {json.dumps(meta['settings'], sort_keys=True)})")
        return out
    if out.exists() and any(out.iterdir()):
        raise RecurError(f"{out} exists and is not a recur dataset; refusing to write into it")
    splits, info = REGISTRY[cfg.task].build(getattr(cfg, cfg.task), cfg.seed)
    try:
        write(out, splits, info, settings(cfg))
    except OSError as e:
        raise RecurError(f"cannot write the dataset to {out}: {e.strerror}") from None
    return out


def write(out: Path, splits: dict, info: dict, setting: dict) -> None:
    """Write atomically: into a temporary sibling, then rename, so a crash leaves no half dataset."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a dataset is as readable as other files
    try:
        meta = {"format_version": FORMAT_VERSION, "task": setting["task"], "info": info, "settings": setting,
                "splits": {}}
        for name, arrays in splits.items():
            (tmp / name).mkdir()
            for key in arrays:  # ARRAYS, plus any extras the task keeps (Sudoku: per-example ratings)
                np.save(tmp / name / f"{key}.npy", arrays[key])
            meta["splits"][name] = {"examples": int(arrays["puzzle_index"][-1]), "puzzles": int(len(arrays["puzzle_ids"])),
                                    "groups": int(len(arrays["group_index"]) - 1)}
        meta["fingerprint"] = fingerprint(tmp)
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        try:
            os.replace(tmp, out)  # replaces `out` only if it is an empty directory
        except OSError:
            # another process finished the same dataset first; keep theirs if it is the same
            if read_metadata(out)["settings"] != json.loads(json.dumps(setting)):
                raise RecurError(f"{out} was written concurrently with other settings") from None
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_metadata(path: Path) -> dict:
    try:
        meta = json.loads((Path(path) / "metadata.json").read_text())
    except FileNotFoundError:
        raise RecurError(f"{path} is not a prepared dataset (no metadata.json); build one with `recur prepare`") from None
    except (OSError, json.JSONDecodeError) as e:
        raise RecurError(f"{path}/metadata.json is unreadable or corrupt: {e}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise RecurError(f"{path} has dataset format {meta.get('format_version')}, this recur reads {FORMAT_VERSION}")
    return meta


class Split:
    """One split's arrays (memory-mapped) plus the example -> puzzle map."""

    def __init__(self, path: Path, name: str, expect: dict, task=None, info: dict | None = None):
        self.name = name
        batch_time = task is not None and task.batch_time
        try:
            self.arrays = {k: np.load(path / name / f"{k}.npy", mmap_mode="r")
                           for k in (ARRAYS[2:] if batch_time else ARRAYS)}
        except (OSError, ValueError) as e:
            raise RecurError(f"dataset {path} split '{name}' is missing or corrupt: {e}") from None
        a = self.arrays
        n = int(a["puzzle_index"][-1]) if batch_time else len(a["inputs"])
        p, g = len(a["puzzle_ids"]), len(a["group_index"]) - 1
        if ((not batch_time and a["labels"].shape != a["inputs"].shape) or len(a["puzzle_index"]) != p + 1
                or (n, p, g) != (expect["examples"], expect["puzzles"], expect["groups"])
                or a["puzzle_index"][-1] != n or a["group_index"][-1] != p):
            raise RecurError(f"dataset {path} split '{name}' has inconsistent array sizes (corrupt?)")
        counts = np.diff(a["puzzle_index"])
        self.example_puzzle = np.repeat(np.arange(p), counts)  # [N] puzzle of each example
        self.size = n
        self.examples = task.examples(path / name, self, info) if batch_time else None

    def __len__(self) -> int:
        return self.size

    def batch(self, idx: np.ndarray, epochs: np.ndarray | None = None, seed: int = 0) -> dict[str, np.ndarray]:
        """Examples `idx` as int32 arrays: inputs [b, L], labels [b, L], puzzle_ids [b]. `epochs` (the sampler's
        epoch of each row) and `seed` (the run's) only matter to batch-time tasks, which may draw per epoch."""
        if self.examples is not None:
            return self.examples.batch(idx, epochs, seed)
        a = self.arrays
        return {"inputs": a["inputs"][idx].astype(np.int32), "labels": a["labels"][idx].astype(np.int32),
                "puzzle_ids": a["puzzle_ids"][self.example_puzzle[idx]].astype(np.int32)}


class Dataset:
    """A prepared dataset directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.meta = read_metadata(self.path)
        self.info: dict = self.meta["info"]
        self.task = REGISTRY.get(self.meta["task"])
        if self.task is None:
            raise RecurError(f"{path} is a '{self.meta['task']}' dataset, a task this recur does not know")
        self.splits = {name: Split(self.path, name, sizes, self.task, self.info)
                       for name, sizes in self.meta["splits"].items()}

    @property
    def fingerprint(self) -> str:
        """The hash written at build time (datasets from before fingerprints: computed now)."""
        if "fingerprint" not in self.meta:
            self.meta["fingerprint"] = fingerprint(self.path)
        return self.meta["fingerprint"]

    def record(self, run_dir: Path) -> dict:
        """What a run stores to find this dataset again (see `find`)."""
        here = self.path.resolve()
        return {"path": str(here), "from_run": os.path.relpath(here, Path(run_dir).resolve()),
                "fingerprint": self.fingerprint, "settings": self.meta["settings"]}

    def check_model(self, info: dict) -> None:
        """The model was built for data shaped like this one (vocabulary, length, puzzle ids)."""
        for key in ("vocab_size", "seq_len"):
            if info[key] != self.info[key]:
                raise RecurError(f"dataset {self.path} has {key}={self.info[key]} but the model expects {info[key]}")
        if self.info["num_puzzle_ids"] > info["num_puzzle_ids"]:
            raise RecurError(f"dataset {self.path} has {self.info['num_puzzle_ids']} puzzle ids but the model only "
                             f"has embeddings for {info['num_puzzle_ids']}")


def find(record: dict | str, run_dir: Path | None, missing_ok: bool = False) -> Path | None:
    """The dataset a run was trained on, wherever the run and the data are now: the run's `record` (see
    Dataset.record) names it relative to the run, absolutely, and by its settings (their default directory
    under the working directory); the first of these holding a dataset with the recorded fingerprint wins.
    RecurError when none does, naming what changed or where it looked (`missing_ok`: None when no dataset
    is at any of these places)."""
    if isinstance(record, str):  # runs from before fingerprints: the path as given at training time
        record = {"path": record}
    places = ([Path(os.path.normpath(Path(run_dir) / record["from_run"]))]
              if run_dir is not None and "from_run" in record else [])
    places.append(Path(record["path"]))
    if "settings" in record:
        places.append(default_dir(record["settings"]))
    changed = []
    for place in places:
        if (place / "metadata.json").is_file():
            found = Dataset(place).fingerprint
            if record.get("fingerprint", found) == found:
                return place
            changed.append((place, found))
    if changed:
        place, found = changed[0]
        raise RecurError(f"the dataset at {place} has changed since the run was trained on it (fingerprint "
                         f"{found}, the run's {record['fingerprint']}); rebuild it with `recur prepare --run RUN "
                         f"--out DIR` or pass --data DIR")
    if missing_ok:
        return None
    looked = ", ".join(dict.fromkeys(str(p) for p in places))
    raise RecurError(f"the dataset the run was trained on is gone (looked in {looked}); rebuild it with "
                     f"`recur prepare --run RUN --out DIR` and pass --data DIR")


class TrainSampler:
    """Infinite stream of global batches, identical on every rank; each rank takes its slice.

    Epoch e: shuffle the groups; from each group pick one puzzle (an augmentation) at random and
    take all its examples in random order (the reference's sampler). Epochs are concatenated and
    cut into batches without dropping a tail. Everything is a function of (seed, epoch), so the
    position (epoch, offset) is the whole state to save for an exact resume.
    """

    def __init__(self, split: Split, global_batch: int, seed: int, rank: int = 0, world: int = 1):
        if global_batch % world:
            raise RecurError(f"train.batch_size={global_batch} must be divisible by the {world} data-parallel ranks")
        self.split, self.global_batch, self.seed = split, global_batch, seed
        self.local = global_batch // world
        self.rank = rank
        self.epoch, self.offset = 0, 0
        self._order: np.ndarray | None = None

    def _epoch_order(self, epoch: int) -> np.ndarray:
        a = self.split.arrays
        rng = np.random.default_rng([self.seed, epoch])
        gidx, pidx = np.asarray(a["group_index"]), np.asarray(a["puzzle_index"])
        groups = rng.permutation(len(gidx) - 1)
        sizes = gidx[groups + 1] - gidx[groups]
        puzzles = gidx[groups] + (rng.random(len(groups)) * sizes).astype(np.int64)
        start, count = pidx[puzzles], pidx[puzzles + 1] - pidx[puzzles]
        if np.all(count == 1):
            return start
        # all examples of each picked puzzle, shuffled within the puzzle
        owner = np.repeat(np.arange(len(puzzles)), count)
        within = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        within = within[np.lexsort((rng.random(len(owner)), owner))]  # sorted by owner, random inside
        return np.repeat(start, count) + within

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        """This rank's example indices [B/world] of the next global batch, and the epoch each was drawn in."""
        parts, epochs, need = [], [], self.global_batch
        while need:
            if self._order is None:
                self._order = self._epoch_order(self.epoch)
            take = self._order[self.offset:self.offset + need]
            parts.append(take)
            epochs.append(np.full(len(take), self.epoch, np.int64))
            need -= len(take)
            self.offset += len(take)
            if self.offset == len(self._order):
                self.epoch, self.offset, self._order = self.epoch + 1, 0, None
        mine = slice(self.rank * self.local, (self.rank + 1) * self.local)
        return np.concatenate(parts)[mine], np.concatenate(epochs)[mine]

    def next_indices(self) -> np.ndarray:
        """This rank's example indices [B/world] of the next global batch."""
        return self._draw()[0]

    def next(self) -> dict[str, np.ndarray]:
        idx, epochs = self._draw()
        return self.split.batch(idx, epochs, self.seed)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.offset, self._order = int(state["epoch"]), int(state["offset"]), None


def eval_batches(split: Split, batch: int, rank: int = 0, world: int = 1, limit: int = 0):
    """Sequential batches over the first `limit` (0 = all) examples; rank r takes every world-th batch."""
    n = min(len(split), limit) if limit else len(split)
    for i, lo in enumerate(range(0, n, batch)):
        if i % world == rank:
            idx = np.arange(lo, min(lo + batch, n))
            yield {**split.batch(idx), "index": idx}
