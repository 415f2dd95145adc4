"""The prepared ARC dataset: the reference split, puzzle ids, batch-time examples, determinism."""

import hashlib

import numpy as np
import pytest

from recur.config import load_config
from recur.data import Dataset, TrainSampler, prepare
from recur.errors import RecurError
from recur.tasks.arc import augment
from recur.tasks.arc.grids import crop, encode

from arc_helpers import random_task, write_kaggle

K = 5


def make_sources(folder, seed=0):
    rng = np.random.default_rng(seed)
    # the last task of each role has grids up to 4x4, the others up to 6x6
    train = [random_task(rng, f"tr{i}", demos=2 + i % 2, tests=1 + i % 2, max_side=6 - 2 * (i == 3)) for i in range(4)]
    test = [random_task(rng, f"ev{i}", demos=2, tests=1 + (i == 0), max_side=6 - 2 * (i == 2)) for i in range(3)]
    write_kaggle(folder, "tr", train)
    write_kaggle(folder, "ev", test)
    return train, test


def config(folder, *extra):
    return load_config(None, ["data.task=arc", f"data.arc.kaggle_dir={folder}", "data.arc.train=kaggle:tr",
                              "data.arc.test=kaggle:ev", f"data.arc.augmentations={K}", *extra])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("arc")
    train, test = make_sources(root / "src")
    return train, test, root, prepare(config(root / "src").data, root / "data")


def digest(path):
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_reference_split_assignment_and_puzzle_ids(built):
    train, test, _, path = built
    ds = Dataset(path)
    tr, te = ds.splits["train"], ds.splits["test"]
    tasks = train + test
    n_aug = np.diff(np.asarray(tr.arrays["group_index"]))
    assert len(n_aug) == len(tasks) and (n_aug == K + 1).all()  # random tasks have no symmetry: 1 + K each
    assert ds.info["num_puzzle_ids"] == 1 + len(tasks) * (K + 1)
    ids = np.asarray(tr.arrays["puzzle_ids"])
    assert ids.min() == 1 and len(set(ids.tolist())) == len(ids)  # 0 is the blank
    per_puzzle = np.diff(np.asarray(tr.arrays["puzzle_index"]))
    want = [len(t.train) + len(t.test) for t in train] + [len(t.train) for t in test]
    assert per_puzzle.tolist() == np.repeat(want, K + 1).tolist()  # test tasks train their demonstrations only
    assert len(te) == sum(len(t.test) for t in test) * (K + 1)
    # test puzzle ids are the training puzzle ids of the same augmented task
    assert np.array_equal(np.asarray(te.arrays["puzzle_ids"]), ids[len(train) * (K + 1):])
    # the test-example map: every (task, test input, augmentation) exactly once
    m = te.examples.describe(np.arange(len(te)))
    seen = sorted(zip(m["task"].tolist(), m["pair"].tolist(), m["aug"].tolist()))
    assert seen == sorted((len(train) + t, i, a) for t in range(len(test)) for i in range(len(test[t].test))
                          for a in range(K + 1))
    assert [tid for _, tid, _ in te.examples.tasks()] == ["ev0", "ev1", "ev2"]


def test_batches_are_the_augmented_translated_pairs(built):
    train, test, _, path = built
    tasks = train + test
    tr = Dataset(path).splits["train"]
    idx = np.arange(len(tr))
    epochs = np.full(len(idx), 3)
    b = tr.batch(idx, epochs, seed=11)
    rows = tr.examples.describe(idx)
    d = np.asarray(tr.examples.a["puzzle_dihedral"])[rows["puzzle"]].astype(np.int64)
    r0, c0 = tr.examples.offsets(idx, epochs, 11, rows, d)
    moved = 0
    for e in idx:
        t, k, a = rows["task"][e], rows["pair"][e], rows["aug"][e]
        task = tasks[t]
        x, y = (task.train + task.test)[k]
        td, tc = augment.table(task.train + task.test, K, 0, task.id)
        assert np.array_equal(tr.examples.a["puzzle_colours"][rows["puzzle"][e]], tc[a])
        want_x = encode(augment.apply(x, td[a], tc[a]), 30, (r0[e], c0[e]))
        want_y = encode(augment.apply(y, td[a], tc[a]), 30, (r0[e], c0[e]))
        assert np.array_equal(b["inputs"][e], want_x) and np.array_equal(b["labels"][e], want_y)
        moved += (r0[e], c0[e]) != (0, 0)
    assert moved > len(idx) // 2
    # one example per puzzle and epoch stays at (0, 0)
    at_origin = (r0 == 0) & (c0 == 0)
    assert all(at_origin[rows["puzzle"] == p].sum() >= 1 for p in range(len(tr.arrays["puzzle_ids"])))
    plain = tr.batch(idx)  # no epochs: nothing is translated
    assert np.array_equal(crop(plain["inputs"])[0], augment.apply(tasks[0].train[0][0], 0, np.arange(10)))


def test_test_split_is_never_translated_and_unsolved_tests_have_empty_labels(tmp_path):
    train, test = make_sources(tmp_path / "src")
    (tmp_path / "src" / "arc-agi_ev_solutions.json").unlink()
    ds = Dataset(prepare(config(tmp_path / "src").data, tmp_path / "data"))
    te, tr = ds.splits["test"], ds.splits["train"]
    b = te.batch(np.arange(len(te)), np.zeros(len(te), np.int64), seed=3)
    assert (b["labels"] == 0).all()
    m = te.examples.describe(np.arange(len(te)))
    for e in range(len(te)):
        task = test[m["task"][e] - len(train)]
        d, c = augment.table(task.train + [(x, None) for x, _ in task.test], K, 0, task.id)
        assert np.array_equal(b["inputs"][e], encode(augment.apply(task.test[m["pair"][e]][0], d[m["aug"][e]],
                                                                    c[m["aug"][e]])))
    # training tasks keep their test pairs; test tasks without solutions train their demonstrations
    assert np.diff(np.asarray(tr.arrays["puzzle_index"]))[-1] == len(test[-1].train)


def test_same_seed_same_bytes_other_seed_differs(built, tmp_path):
    _, _, root, path = built
    again = prepare(config(root / "src").data, tmp_path / "again")
    assert digest(again) == digest(path)
    other = prepare(config(root / "src", "data.seed=1").data, tmp_path / "other")
    assert digest(other)["train/puzzle_colours.npy"] != digest(path)["train/puzzle_colours.npy"]
    tr = Dataset(path).splits["train"]
    idx = np.arange(0, len(tr), 3)
    one = tr.batch(idx, np.full(len(idx), 2), seed=5)
    assert all(np.array_equal(one[k], tr.batch(idx, np.full(len(idx), 2), seed=5)[k]) for k in one)
    assert not np.array_equal(one["inputs"], tr.batch(idx, np.full(len(idx), 2), seed=6)["inputs"])
    assert not np.array_equal(one["inputs"], tr.batch(idx, np.full(len(idx), 3), seed=5)["inputs"])
    off = prepare(config(root / "src", "data.arc.translate=false").data, tmp_path / "still")
    still = Dataset(off).splits["train"].batch(idx, np.full(len(idx), 2), seed=5)
    assert np.array_equal(still["inputs"], tr.batch(idx)["inputs"])


def test_sampler_resumes_exactly(built):
    tr = Dataset(built[3]).splits["train"]
    a = TrainSampler(tr, 16, seed=3)
    ref = [a.next() for _ in range(8)]  # crosses epochs
    b = TrainSampler(tr, 16, seed=3)
    for _ in range(5):
        b.next()
    c = TrainSampler(tr, 16, seed=3)
    c.load_state_dict(b.state_dict())
    assert all(np.array_equal(c.next()["inputs"], r["inputs"]) for r in ref[5:])
    r0, r1 = TrainSampler(tr, 16, 3, rank=0, world=2), TrainSampler(tr, 16, 3, rank=1, world=2)
    assert all(np.array_equal(np.concatenate([r0.next()["labels"], r1.next()["labels"]]), r["labels"]) for r in ref)


def test_max_tasks_canvas_and_overlap_settings(tmp_path):
    train, test = make_sources(tmp_path / "src")
    ds = Dataset(prepare(config(tmp_path / "src", "data.arc.max_tasks=2").data, tmp_path / "few"))
    assert (ds.info["train_tasks"], ds.info["test_tasks"]) == (2, 2)
    small = Dataset(prepare(config(tmp_path / "src", "data.arc.canvas=5").data, tmp_path / "small"))
    fits = [t for t in train + test if all(max(g.shape) <= 5 for p in t.train + t.test for g in p)]
    assert small.info["train_tasks"] + small.info["test_tasks"] == len(fits) and small.info["seq_len"] == 25
    leaky = train + [random_task(np.random.default_rng(9), "leak")]
    leaky[-1].train.append(test[1].test[0])
    write_kaggle(tmp_path / "src", "tr", leaky)
    with pytest.raises(RecurError, match="1 training tasks share an id or a pair with a test task .leak."):
        prepare(config(tmp_path / "src").data, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    dropped = Dataset(prepare(config(tmp_path / "src", "data.arc.overlap=drop").data, tmp_path / "dropped"))
    assert dropped.info["train_tasks"] == len(train)
    with pytest.raises(RecurError, match="data.arc.canvas must be in 2..30"):
        config(tmp_path / "src", "data.arc.canvas=31")


def test_arc_presets_are_the_trm_att_recipe():
    from recur.models import build_model
    for name, train, test in [("arc1", "kaggle:training kaggle:concept", "kaggle:evaluation"),
                              ("arc2", "kaggle:training2 kaggle:concept", "kaggle:evaluation2")]:
        cfg = load_config(name)
        m, o, a = cfg.model, cfg.optim, cfg.data.arc
        assert (m.hidden, m.heads, m.T, m.n, m.layers, m.prefix_len, m.puzzle_emb_dim) == (512, 8, 3, 4, 2, 16, 512)
        assert (o.lr, o.puzzle_emb_lr, o.weight_decay, o.warmup, o.ema, cfg.train.batch_size) == (1e-4, 1e-2, 0.1, 2000, True, 768)
        assert (cfg.data.task, a.train, a.test, a.augmentations, a.canvas) == ("arc", train, test, 1000, 30)
    model = build_model(load_config("arc1").model, {"vocab_size": 12, "seq_len": 900, "num_puzzle_ids": 1})
    dense = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("puzzle_emb"))
    assert dense == 6_829_058  # the reference TRM-Att ARC model's parameter count
