"""Voting, both scoring rules, the submission file and its scorer, pictures, and a training smoke test."""

import json
import pickle

import numpy as np
import pytest
import torch

import recur
from recur.cli import main
from recur.config import load_config
from recur.data import Dataset, eval_batches, prepare
from recur.errors import RecurError
from recur.tasks import REGISTRY
from recur.tasks.arc import augment, pictures
from recur.tasks.arc.grids import encode
from recur.tasks.arc.score import score, score_submission, submission, write_submission
from recur.tasks.arc.vote import Votes
from recur.train import Trainer

from arc_helpers import random_task, write_kaggle

K = 3


@pytest.fixture(scope="module")
def arc(tmp_path_factory):
    root = tmp_path_factory.mktemp("arcvote")
    rng = np.random.default_rng(0)
    train = [random_task(rng, f"tr{i}") for i in range(2)]
    test = [random_task(rng, "ev0", tests=2), random_task(rng, "ev1"), random_task(rng, "ev2")]
    write_kaggle(root / "src", "tr", train)
    write_kaggle(root / "src", "ev", test)
    cfg = load_config(None, ["data.task=arc", f"data.arc.kaggle_dir={root / 'src'}", "data.arc.train=kaggle:tr",
                             "data.arc.test=kaggle:ev", f"data.arc.augmentations={K}"])
    ds = Dataset(prepare(cfg.data, root / "data"))
    return ds, test, root


def predictions(ds, wanted):
    """Tokens [N, 900] of the whole test split: row e shows wanted(task id, test index, aug) (a grid or None),
    augmented the way row e's puzzle is, so that de-augmenting it gives the grid back."""
    te = ds.splits["test"]
    ex = te.examples
    m = ex.describe(np.arange(len(te)))
    ids = np.asarray(ex.a["task_ids"])
    rows = []
    for e in range(len(te)):
        grid = wanted(ids[m["task"][e]], int(m["pair"][e]), int(m["aug"][e]))
        p = m["puzzle"][e]
        rows.append(np.zeros(900, np.uint8) if grid is None else
                    encode(augment.apply(grid, ex.a["puzzle_dihedral"][p], ex.a["puzzle_colours"][p])))
    return np.stack(rows), m


def case(test):
    """The hand-made votes described in test_vote_ranking_and_both_scoring_rules."""
    sol = {t.id: [y for _, y in t.test] for t in test}
    wrong = np.full((2, 2), 7, np.uint8)
    other = np.full((1, 3), 4, np.uint8)

    def wanted(task, i, a):
        if task == "ev0":
            return sol[task][i] if i == 0 or a == 0 else wrong
        if task == "ev1":
            return sol[task][0] if a < 2 else other
        return None

    def q(task, i, a):
        return 0.1 if task == "ev1" and a < 2 else 0.9
    return wanted, q, wrong, other


def feed(ds, test, parts=1):
    wanted, q, _, _ = case(test)
    tokens, m = predictions(ds, wanted)
    ids = np.asarray(ds.splits["test"].examples.a["task_ids"])
    halt = np.array([q(ids[t], i, a) for t, i, a in zip(m["task"], m["pair"], m["aug"])])
    accs = []
    for rows in np.array_split(np.arange(len(tokens)), parts):
        v = Votes(ds.splits["test"].examples)
        for chunk in np.array_split(rows, 3):  # batch by batch
            v.add(chunk, tokens[chunk], halt[chunk])
        accs.append(v)
    return accs


def test_vote_ranking_and_both_scoring_rules(arc):
    ds, test, _ = arc
    votes = feed(ds, test)[0]
    _, _, wrong, other = case(test)
    # ev0: input 0 always right; input 1 right in 1 of 4 versions.  ev1: right twice (low q), `other`
    # twice (high q), so `other` ranks first.  ev2: no grid at all, so no candidate.
    ev0, ev1, ev2 = 2, 3, 4
    assert [c for _, c, _ in votes.ranked(ev0, 1)] == [3, 1] and np.array_equal(votes.ranked(ev0, 1)[0][0], wrong)
    first = votes.ranked(ev1, 0)
    assert [c for _, c, _ in first] == [2, 2] and np.array_equal(first[0][0], other)
    assert first[0][2] == pytest.approx(0.9) and first[1][2] == pytest.approx(0.1)
    assert votes.ranked(ev2, 0) == []
    s = score(votes)
    assert s["pass@1"] == pytest.approx((1 / 2 + 0 + 0) / 3)  # per-input credit: ev0 half solved
    assert s["task_pass@1"] == 0.0  # all-or-nothing: no task has every input right
    assert s["pass@2"] == pytest.approx(2 / 3) and s["task_pass@2"] == pytest.approx(2 / 3)
    assert s["pass@1000"] == s["pass@2"]
    assert s["per_example_exact"] == pytest.approx((4 + 1 + 2 + 0) / 16)
    assert (s["tasks"], s["test_inputs"]) == (3, 4)


def test_merged_accumulators_equal_one(arc):
    ds, test, _ = arc
    whole = feed(ds, test)[0]
    a, b = feed(ds, test, parts=2)
    merged = a.merge(pickle.loads(pickle.dumps(b)))  # what a rank would send
    assert score(merged) == score(whole)
    for key in whole.candidates:
        assert [(g.tolist(), c, q) for g, c, q in merged.ranked(*key)] == \
               [(g.tolist(), c, q) for g, c, q in whole.ranked(*key)]


def test_submission_schema_and_scorer(arc, tmp_path):
    ds, test, _ = arc
    votes = feed(ds, test)[0]
    _, _, wrong, other = case(test)
    sub = submission(votes)
    assert list(sub) == ["ev0", "ev1", "ev2"] and [len(v) for v in sub.values()] == [2, 1, 1]
    assert sub["ev0"][0]["attempt_1"] == sub["ev0"][0]["attempt_2"] == test[0].test[0][1].tolist()  # one candidate
    assert sub["ev0"][1] == {"attempt_1": wrong.tolist(), "attempt_2": test[0].test[1][1].tolist()}
    assert sub["ev1"][0]["attempt_1"] == other.tolist()
    assert sub["ev2"][0] == {"attempt_1": [[0]], "attempt_2": [[0]]}  # no candidate: the placeholder
    path = write_submission(tmp_path / "out" / "submission.json", sub)
    sols = tmp_path / "solutions.json"
    sols.write_text(json.dumps({t.id: [y.tolist() for _, y in t.test] for t in test}))
    res = score_submission(path, sols)
    assert res["score"] == pytest.approx(score(votes)["pass@2"]) and res["per_task"] == {"ev0": 1.0, "ev1": 1.0, "ev2": 0.0}
    with pytest.raises(RecurError, match="is a directory"):
        write_submission(tmp_path, sub)


@pytest.mark.parametrize("edit, problem", [
    (lambda s: s.pop("ev1"), "task ev1: missing"),
    (lambda s: s["ev0"].pop(), "task ev0: 1 entries for 2 test inputs"),
    (lambda s: s["ev0"][1].pop("attempt_2"), "task ev0 test input 1: expected an object with attempt_1 and attempt_2"),
    (lambda s: s["ev2"][0].update(attempt_1=[[1, 2], [3]]), "task ev2 test input 0 attempt_1: not a grid"),
    (lambda s: s["ev2"][0].update(attempt_2=[[10]]), "task ev2 test input 0 attempt_2: not a grid"),
    (lambda s: s.update(zzz=[]), "task zzz is not in"),
])
def test_malformed_submissions_are_one_line_errors(arc, tmp_path, edit, problem):
    ds, test, _ = arc
    sub = submission(feed(ds, test)[0])
    edit(sub)
    path = tmp_path / "submission.json"
    path.write_text(json.dumps(sub))
    sols = tmp_path / "solutions.json"
    sols.write_text(json.dumps({t.id: [y.tolist() for _, y in t.test] for t in test}))
    with pytest.raises(RecurError) as e:
        score_submission(path, sols)
    assert str(path) in str(e.value) and problem in str(e.value) and "\n" not in str(e.value)
    path.write_text("{")
    with pytest.raises(RecurError, match="not valid JSON"):
        score_submission(path, sols)


def test_scoring_unknown_solutions_is_an_error(tmp_path):
    rng = np.random.default_rng(1)
    write_kaggle(tmp_path / "src", "tr", [random_task(rng, "a")])
    write_kaggle(tmp_path / "src", "ev", [random_task(rng, "b")], solutions=False)
    cfg = load_config(None, ["data.task=arc", f"data.arc.kaggle_dir={tmp_path / 'src'}", "data.arc.train=kaggle:tr",
                             "data.arc.test=kaggle:ev", "data.arc.augmentations=1"])
    votes = Votes(Dataset(prepare(cfg.data, tmp_path / "d")).splits["test"].examples)
    with pytest.raises(RecurError, match="test task b: test input 0 has no known solution"):
        score(votes)
    assert submission(votes) == {"b": [{"attempt_1": [[0]], "attempt_2": [[0]]}]}


def test_pictures_and_text(arc, tmp_path):
    grid = np.array([[0, 1], [9, 4]], np.uint8)
    s = pictures.svg(grid, cell=10, title="x")
    assert s.count("<rect") == 4 and pictures.PALETTE[9] in s and 'width="20"' in s
    row = pictures.svg_row([("input", grid), ("target", grid), ("prediction", None)])
    assert row.count("<rect") == 8 and "prediction (none)" in row
    assert pictures.text(grid) == "0 1\n9 4"
    ansi = pictures.text(grid, colour=True)
    assert ansi.count("\x1b[48;2;") == 4 and ansi.endswith("\x1b[0m")
    task = REGISTRY["arc"]
    info = {"side": 30}
    assert task.render(task.parse("01\n94", info), info) == "01\n94"
    with pytest.raises(RecurError, match="ARC grid: rows have different lengths"):
        task.parse("01\n9", info)
    _, test, root = arc
    texts = [t for _, t in task.read_puzzles(root / "src" / "arc-agi_ev_challenges.json", info)]
    assert len(texts) == 4 and np.array_equal(task.parse(texts[0], info), encode(test[0].test[0][0]))
    (tmp_path / "grids.txt").write_text("01\n23\n\n4\n")
    assert task.read_puzzles(tmp_path / "grids.txt", info) == [(1, "01\n23"), (4, "4")]


def test_ten_task_build_trains_and_votes(tmp_path):
    rng = np.random.default_rng(2)
    write_kaggle(tmp_path / "src", "tr", [random_task(rng, f"t{i}", max_side=5) for i in range(6)])
    write_kaggle(tmp_path / "src", "ev", [random_task(rng, f"e{i}", max_side=5) for i in range(4)])
    cfg = load_config("micro", [
        "data.task=arc", f"data.arc.kaggle_dir={tmp_path / 'src'}", "data.arc.train=kaggle:tr",
        "data.arc.test=kaggle:ev", "data.arc.augmentations=4", "data.arc.canvas=6", f"data.dir={tmp_path / 'data'}",
        "model.puzzle_emb_dim=32", "train.steps=2", "train.eval_every=0", "train.ckpt_every=0", "train.log_every=1",
        "eval.show=1", "train.device=cpu", f"train.out_dir={tmp_path}", "train.run_name=run"])
    summary = Trainer(cfg, tmp_path / "run").fit()
    assert summary["step"] == 2 and summary["eval"]["examples"] == 4 * 5
    model = recur.load(tmp_path / "run")
    split = Dataset(tmp_path / "data").splits["test"]
    votes, start = Votes(split.examples), 0
    for b in eval_batches(split, 8):
        pred = model.predict(b["inputs"], b["puzzle_ids"], halt="none")
        rows = np.arange(start, start + len(b["inputs"]))
        votes.add(rows, pred.tokens.numpy(), torch.sigmoid(pred.halt_score[-1]).numpy())
        start += len(rows)
    s = score(votes)
    assert votes.rows == len(split) == 20 and s["tasks"] == 4 and 0 <= s["pass@2"] <= 1
    assert len(submission(votes)) == 4


def test_cli_eval_votes_writes_a_submission_scores_it_and_adapts_to_new_tasks(tmp_path, capsys):
    """recur eval on an ARC run reports both voted scores and per-example exact under their names and writes a
    submission that recur score scores; a model evaluated on tasks it never trained says so; recur adapt
    trains new puzzle-embedding rows (from the mean) on the new tasks' demonstrations and then votes on them."""
    rng = np.random.default_rng(3)
    write_kaggle(tmp_path / "src", "tr", [random_task(rng, f"t{i}", max_side=5) for i in range(4)])
    write_kaggle(tmp_path / "src", "ev", [random_task(rng, f"e{i}", max_side=5) for i in range(3)])
    write_kaggle(tmp_path / "src", "new", [random_task(rng, f"n{i}", max_side=5) for i in range(2)])
    common = [f"data.arc.kaggle_dir={tmp_path / 'src'}", "data.arc.augmentations=3", "data.arc.canvas=6",
              "train.precision=float32", "eval.show=0"]
    assert main(["train", "micro", "data.task=arc", "data.arc.train=kaggle:tr", "data.arc.test=kaggle:ev",
                 "model.puzzle_emb_dim=32", "train.steps=3", "train.eval_every=0", f"train.out_dir={tmp_path}",
                 "train.run_name=run", f"data.dir={tmp_path / 'd1'}", *common]) == 0
    capsys.readouterr()
    sub = tmp_path / "sub.json"
    assert main(["eval", str(tmp_path / "run"), "--submission", str(sub)]) == 0
    out = capsys.readouterr().out
    assert "pass@k, per test input" in out and "all-or-nothing per task" in out and "not pass@k" in out
    assert main(["score", str(sub), str(tmp_path / "src" / "arc-agi_ev_solutions.json"), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["tasks"] == 3 and 0 <= scored["score"] <= 1
    # the new tasks' puzzle ids were never trained: evaluating on them says so
    assert main(["prepare", "micro", "data.task=arc", "data.arc.train=", "data.arc.test=kaggle:new",
                 "--out", str(tmp_path / "new"), *common[:3]]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--data", str(tmp_path / "new")]) == 0
    assert "never trained" in capsys.readouterr().err
    assert main(["adapt", str(tmp_path / "run"), "data.arc.train=", "data.arc.test=kaggle:new", "train.steps=2",
                 "train.freeze=true", f"train.out_dir={tmp_path}", f"data.dir={tmp_path / 'd2'}"]) == 0
    out = capsys.readouterr().out
    assert "start at the mean" in out and "pass@2" in out
    adapted = next(tmp_path.glob("adapt-*"))
    before, after = recur.load(tmp_path / "run").module, recur.load(adapted).module
    assert torch.equal(before.net.layers[0].mlp.down.weight, after.net.layers[0].mlp.down.weight)  # frozen
    assert (after.puzzle_emb[1:] != 0).any(-1).all()  # every new row starts from the mean, none at zero
