import hashlib
import json

import numpy as np
import pytest

from recur.config import load_config
from recur.data import Dataset, Split, TrainSampler, eval_batches, prepare, write
from recur.errors import RecurError


def digest(path):
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def micro_data(tmp_path_factory):
    cfg = load_config("micro")
    return prepare(cfg.data, tmp_path_factory.mktemp("d") / "micro")


def test_same_seed_gives_byte_identical_data(tmp_path, micro_data):
    cfg = load_config("micro")
    again = prepare(cfg.data, tmp_path / "again")
    assert digest(again) == digest(micro_data)
    other = prepare(load_config("micro", ["data.seed=1"]).data, tmp_path / "other")
    assert digest(other)["train/inputs.npy"] != digest(micro_data)["train/inputs.npy"]


def test_prepare_reuses_matching_and_refuses_other_settings(tmp_path, micro_data):
    before = digest(micro_data)
    assert prepare(load_config("micro").data, micro_data) == micro_data
    assert digest(micro_data) == before
    with pytest.raises(RecurError, match="other settings"):
        prepare(load_config("micro", ["data.seed=5"]).data, micro_data)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    with pytest.raises(RecurError, match="not a recur dataset"):
        prepare(load_config("micro").data, tmp_path / "notes")
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep me"


def test_layout_and_metadata(micro_data):
    ds = Dataset(micro_data)
    assert ds.info == {"vocab_size": 6, "seq_len": 16, "num_puzzle_ids": 1, "size": 4}
    tr = ds.splits["train"]
    assert len(tr) == 64 * 3 and ds.meta["splits"]["train"]["groups"] == 64
    assert isinstance(tr.arrays["inputs"], np.memmap)
    b = tr.batch(np.array([0, 5]))
    assert b["inputs"].dtype == np.int32 and b["inputs"].shape == (2, 16) and b["puzzle_ids"].tolist() == [0, 0]


def test_sampler_epoch_visits_every_group_once(micro_data):
    tr = Dataset(micro_data).splits["train"]
    s = TrainSampler(tr, global_batch=16, seed=0)
    seen = np.concatenate([s.next_indices() for _ in range(4)])  # 64 groups = 4 batches of 16
    groups = np.searchsorted(np.asarray(tr.arrays["group_index"]), tr.example_puzzle[seen], side="right") - 1
    assert sorted(groups.tolist()) == list(range(64))
    assert s.state_dict() == {"epoch": 1, "offset": 0}


def test_sampler_resume_and_rank_slices(micro_data):
    tr = Dataset(micro_data).splits["train"]
    a = TrainSampler(tr, 24, seed=7)
    ref = [a.next_indices() for _ in range(10)]  # crosses epoch boundaries (64 groups per epoch)
    b = TrainSampler(tr, 24, seed=7)
    for _ in range(3):
        b.next_indices()
    c = TrainSampler(tr, 24, seed=7)
    c.load_state_dict(json.loads(json.dumps(b.state_dict())))
    assert all(np.array_equal(c.next_indices(), r) for r in ref[3:])
    r0, r1 = TrainSampler(tr, 24, 7, rank=0, world=2), TrainSampler(tr, 24, 7, rank=1, world=2)
    assert all(np.array_equal(np.concatenate([r0.next_indices(), r1.next_indices()]), r) for r in ref)
    with pytest.raises(RecurError, match="divisible"):
        TrainSampler(tr, 25, 0, rank=0, world=2)


def test_sampler_takes_all_examples_of_a_puzzle_together(tmp_path):
    # 3 groups; group g has 2 puzzles; puzzle p has 3 examples; example value encodes its puzzle
    P, E = 6, 3
    inputs = np.repeat(np.arange(P, dtype=np.uint8), E)[:, None].repeat(4, 1)
    split = {"inputs": inputs, "labels": inputs.copy(), "puzzle_ids": np.arange(P, dtype=np.int32),
             "puzzle_index": np.arange(0, P * E + 1, E, dtype=np.int64), "group_index": np.arange(0, P + 1, 2, dtype=np.int64)}
    write(tmp_path / "d", {"train": split}, {"vocab_size": 7, "seq_len": 4, "num_puzzle_ids": P}, {"task": "sudoku"})
    tr = Split(tmp_path / "d", "train", {"examples": P * E, "puzzles": P, "groups": 3})
    s = TrainSampler(tr, global_batch=9, seed=1)
    b = s.next()
    owners = b["inputs"][:, 0]
    assert len(set((owners // 2).tolist())) == 3  # one puzzle from each group...
    assert all(np.sum(owners == o) == E for o in set(owners.tolist()))  # ...with all its examples
    assert np.array_equal(b["puzzle_ids"], owners)


def test_eval_batches_partition_the_split(micro_data):
    te = Dataset(micro_data).splits["test"]
    whole = np.concatenate([b["inputs"] for b in eval_batches(te, 10)])
    parts = [b["inputs"] for r in range(3) for b in eval_batches(te, 10, rank=r, world=3)]
    assert len(whole) == len(te) == 32
    assert sorted(map(bytes, whole)) == sorted(map(bytes, np.concatenate(parts)))
    assert sum(len(b["inputs"]) for b in eval_batches(te, 10, limit=15)) == 15


def test_corrupt_or_mismatched_data_is_a_clear_error(tmp_path, micro_data):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(micro_data, bad)
    (bad / "train" / "labels.npy").write_bytes(b"not numpy")
    with pytest.raises(RecurError, match="missing or corrupt"):
        Dataset(bad)
    (bad / "metadata.json").write_text("{")
    with pytest.raises(RecurError, match="corrupt"):
        Dataset(bad)
    with pytest.raises(RecurError, match="not a prepared dataset"):
        Dataset(tmp_path)
    ds = Dataset(micro_data)
    with pytest.raises(RecurError, match="vocab_size=6 but the model expects 11"):
        ds.check_model({"vocab_size": 11, "seq_len": 81, "num_puzzle_ids": 1})
