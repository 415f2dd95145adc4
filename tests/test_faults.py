"""Fault injection: the command line driven as a careless or adversarial user would.

Every case checks what the user sees (one `recur: error:` line on stderr and a non-zero exit, or a
note naming what was skipped) and that nothing was lost or overwritten. Disk faults are real: a
read-only directory is one the test process cannot write (as an unprivileged user when the tests run
as root, since root writes anywhere), and a full disk is a file-size limit (RLIMIT_FSIZE) that makes
the kernel refuse the checkpoint's write.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from recur.checkpoint import list_checkpoints, read_model
from recur.cli import main
from recur.data import Dataset
from recur.lock import RunLock
from recur.supervision import DeepSupervision
from recur.tasks.sudoku import generate

from conftest import assert_one_line_error

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


def micro_args(root: Path, name: str = "run", *extra: str) -> list[str]:
    return ["train", "micro", f"train.out_dir={root}", f"train.run_name={name}", f"data.dir={root / 'data'}",
            "train.precision=float32", *extra]


def files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished 12-step micro run (checkpoints at steps 6 and 12), its data inside the same folder."""
    root = tmp_path_factory.mktemp("faults")
    assert main(micro_args(root)) == 0
    return root / "run"


@pytest.fixture
def copy(run, tmp_path) -> Path:
    """A private copy of the run and its data (for cases that damage it)."""
    shutil.copytree(run.parent, tmp_path / "w")
    return tmp_path / "w" / "run"


def puzzle_text(seed: int = 99) -> str:
    puzzles, _, _ = generate(4, 1, seed=seed)
    return "".join(str(d) if d else "." for d in puzzles[0])


# ---------------------------------------------------------------------------------------------- resume


def test_resume_as_the_readme_writes_it_continues_any_run(copy, capsys):
    assert main(["train", "--resume", str(copy), "train.steps=16", "train.eval_every=8"]) == 0
    assert json.loads((copy / "summary.json").read_text())["step"] == 16
    assert main(["train", "micro", "--resume", str(copy), "train.steps=20"]) == 0  # preset first, settings last
    assert [p.name for p in list_checkpoints(copy)][-1] == "step_0000020"
    capsys.readouterr()
    assert main(["train", "quickstart", "--resume", str(copy), "train.steps=30"]) == 2
    assert_one_line_error(capsys, 2, "own settings (preset micro)")
    assert main(["train", "--resume", str(copy), "model.hidden=64"]) == 2
    assert_one_line_error(capsys, 2, "cannot change model.hidden")


def test_resuming_a_finished_run_changes_nothing(copy, capsys):
    before = files(copy)
    assert main(["train", "--resume", str(copy)]) == 2
    assert_one_line_error(capsys, 2, "is finished", "step 12", "train.steps=N")
    assert files(copy) == before


def test_a_second_writer_is_refused_while_the_first_holds_the_run(copy, capsys):
    before = files(copy)
    with RunLock(copy, "train"):  # what a running `recur train --resume` holds
        assert main(["train", "--resume", str(copy), "train.steps=16"]) == 2
        assert_one_line_error(capsys, 2, "is in use by process", str(os.getpid()))
        assert main(["profile", str(copy), "--limit", "4"]) == 2
        assert_one_line_error(capsys, 2, "is in use")
        assert main(["eval", str(copy), "--limit", "4", "--json"]) == 0  # reading is fine
    assert files(copy) == before
    capsys.readouterr()
    # a lock file left by a process that died is free again: the kernel dropped its flock
    (copy / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone", "purpose": "train"}))
    assert main(["train", "--resume", str(copy), "train.steps=14", "train.eval_every=0"]) == 0


def test_two_real_processes_one_run(copy):
    """A training process holds the run; a resume started beside it is refused at once."""
    first = subprocess.Popen([sys.executable, "-m", "recur.cli", "train", "--resume", str(copy), "train.steps=100000",
                              "train.eval_every=0", "train.ckpt_every=0", "train.time_limit=0.5"],
                             env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):  # wait until it holds the lock
            if (copy / ".lock").is_file() and b"resume" in (copy / ".lock").read_bytes():
                break
            if first.poll() is not None:
                pytest.fail(first.stderr.read())
            import time
            time.sleep(0.05)
        second = subprocess.run([sys.executable, "-m", "recur.cli", "train", "--resume", str(copy), "train.steps=50"],
                                env=ENV, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1 and f"in use by process {first.pid}" in second.stderr
    finally:
        first.terminate()
        first.wait(timeout=60)


def test_a_damaged_metrics_tail_does_not_stop_a_resume(copy, capsys):
    shutil.rmtree(list_checkpoints(copy)[-1])  # as if killed after step 8's record, before the step-12 checkpoint
    with (copy / "metrics.jsonl").open("a") as f:
        f.write('{"kind": "train", "step": 1')  # a record cut off mid-line by the kill
    assert main(["train", "--resume", str(copy)]) == 0
    steps = [json.loads(line)["step"] for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(12) == 2  # train + eval records of step 12, once each


# ---------------------------------------------------------------------------------------------- portable runs


def test_a_moved_run_finds_its_data_and_a_changed_dataset_is_named(tmp_path, monkeypatch, capsys):
    assert main(micro_args(tmp_path / "first", "run", "eval.show=0")) == 0
    capsys.readouterr()
    moved = tmp_path / "elsewhere" / "experiments"
    shutil.move(str(tmp_path / "first"), str(moved))
    monkeypatch.chdir(tmp_path)  # neither where it was trained nor beside it
    run = moved / "run"
    assert main(["eval", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 32
    # the data gone: one line that says how to rebuild it
    shutil.rmtree(moved / "data")
    assert main(["eval", str(run)]) == 2
    assert_one_line_error(capsys, 2, "is gone", "recur prepare --run")
    assert main(["prepare", "--run", str(run), "--out", str(tmp_path / "rebuilt")]) == 0
    assert main(["eval", str(run), "--data", str(tmp_path / "rebuilt"), "--json"]) == 0
    # a rebuild is byte-identical, so the run also resumes from it
    shutil.move(str(tmp_path / "rebuilt"), str(moved / "data"))
    assert main(["train", "--resume", str(run), "train.steps=13", "train.eval_every=0"]) == 0
    capsys.readouterr()
    # the same place now holds other data (rebuilt with another seed): refused, not silently evaluated
    shutil.rmtree(moved / "data")
    assert main(["prepare", "micro", "data.seed=7", "--out", str(moved / "data")]) == 0
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    assert_one_line_error(capsys, 2, "has changed since the run was trained")


def test_a_symlinked_run_is_evaluated(run, tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(run, target_is_directory=True)
    assert main(["eval", str(link), "--json", "--limit", "8"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 8


# ---------------------------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_damaged_newest_checkpoint_is_skipped_by_name_or_refused_when_named(copy, damage, capsys):
    newest = list_checkpoints(copy)[-1] / "model.safetensors"
    if damage == "missing":
        newest.unlink()
    else:
        newest.write_bytes(newest.read_bytes()[:100])  # truncated
    assert main(["eval", str(copy), "--json"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["step"] == 6  # the older checkpoint, named in the output
    assert "recur: note: skipped checkpoint" in cap.err and "step_0000012" in cap.err
    assert main(["eval", str(newest.parent)]) == 2  # the damaged one, asked for by name
    assert_one_line_error(capsys, 2, "step_0000012")
    assert main(["train", "--resume", str(copy), "train.steps=14"]) == 0  # resumes from step 6 and says so
    assert "skipped checkpoint" in capsys.readouterr().out


def test_nan_weights_in_a_checkpoint_are_refused(copy, capsys):
    f = list_checkpoints(copy)[-1] / "model.safetensors"
    from safetensors import safe_open
    with safe_open(str(f), "pt") as sf:
        header = sf.metadata()
    weights = load_file(str(f))
    name = next(k for k in weights if weights[k].is_floating_point() and weights[k].numel() > 1)
    weights[name][0] = float("nan")
    save_file(weights, str(f), metadata=header)
    assert main(["eval", str(f)]) == 2
    assert_one_line_error(capsys, 2, "NaN or infinite", name)


def test_a_diverging_run_stops_in_one_line_without_writing_a_nan_checkpoint(tmp_path, monkeypatch, capsys):
    real, calls = DeepSupervision.step, []

    def step(self, model, *a, **kw):  # the weights blow up during step 7
        calls.append(1)
        if len(calls) == 7:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return real(self, model, *a, **kw)

    monkeypatch.setattr(DeepSupervision, "step", step)
    assert main(micro_args(tmp_path)) == 2
    assert_one_line_error(capsys, 2, "training diverged", "step_0000006")
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_0000006"]
    read_model(tmp_path / "run")  # the kept checkpoint is finite


def test_checkpoint_files_are_as_readable_as_the_rest(run):
    ckpt = list_checkpoints(run)[-1]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in ckpt.iterdir()}
    config = stat.S_IMODE((run / "config.json").stat().st_mode)
    assert set(modes.values()) == {config}, modes


# ---------------------------------------------------------------------------------------------- solve


def test_solve_names_its_model_and_the_line_of_a_bad_puzzle(run, tmp_path, capsys):
    assert main(["solve", puzzle_text()]) == 2  # no --model: recur ships no 4x4 model
    assert_one_line_error(capsys, 2, "no shipped model solves puzzles of 16 cells", "--model")
    assert main(["solve", "1" * 36, "--model", str(run)]) == 2  # a 6x6 puzzle for the 4x4 model
    assert_one_line_error(capsys, 2, "has 36 cells, expected 16", str(run))
    bad = tmp_path / "puzzles.txt"
    bad.write_bytes(f"# two puzzles, Windows line ends\r\n{puzzle_text()}\r\n{'1' * 15}\r\n".encode())
    assert main(["solve", str(bad), "--model", str(run)]) == 2
    assert_one_line_error(capsys, 2, f"{bad} line 3", "has 15 cells")
    bad.write_bytes(f"{puzzle_text()}\r\n{puzzle_text(5)}\r\n".encode())  # CRLF is fine
    assert main(["solve", str(bad), "--model", str(run)]) == 0
    assert capsys.readouterr().out.count("answer after") == 2
    bad.write_bytes(puzzle_text().encode("utf-16"))
    assert main(["solve", str(bad), "--model", str(run)]) == 2
    assert_one_line_error(capsys, 2, "not UTF-8")
    assert main(["solve", "puzzles/missing.txt", "--model", str(run)]) == 2
    assert_one_line_error(capsys, 2, "puzzle file puzzles/missing.txt does not exist")
    assert main(["solve", "1" * 1_000_000, "--model", str(run)]) == 2  # a huge argument: one short line
    line = assert_one_line_error(capsys, 2, "has 1000000 cells")
    assert len(line) < 500


# ---------------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize("setting,needle", [
    ("eval.batch_size=-1", "eval.batch_size"), ("train.time_limit=-1", "train.time_limit"),
    ("train.batch_size=100000", "larger than the 192 training examples"), ("optim.betas=0.9,1.5", "optim.betas"),
])
def test_meaningless_settings_are_refused_before_anything_is_written(setting, needle, tmp_path, capsys):
    assert main(micro_args(tmp_path, "run", setting)) == 2
    assert_one_line_error(capsys, 2, needle)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv,needle", [
    (["eval", "{run}", "--batch-size", "-1"], "--batch-size must be >= 1"),
    (["eval", "{run}", "--limit", "-3"], "--limit must be >= 0"),
    (["eval", "{run}", "--halt", "sometimes"], "invalid choice"),
    (["train", "micro", "--no-such-flag"], "unrecognized arguments"),
    (["frobnicate"], "invalid choice"),
    (["train", "--resume", "{tmp}/nothing"], "does not exist"),
    (["train", "--resume", "{tmp}"], "not a resumable run"),
])
def test_command_line_mistakes_are_one_line(argv, needle, run, tmp_path, capsys):
    assert_one_line_error(capsys, main([a.format(run=run, tmp=tmp_path) for a in argv]), needle)


def test_a_hand_edited_config_is_named(copy, capsys):
    record = json.loads((copy / "config.json").read_text())
    record["config"]["model"]["hiden"] = 3
    (copy / "config.json").write_text(json.dumps(record))
    assert main(["train", "--resume", str(copy), "train.steps=20"]) == 2
    assert_one_line_error(capsys, 2, "unknown config key 'model.hiden'")
    (copy / "config.json").write_text("{not json")
    assert main(["train", "--resume", str(copy), "train.steps=20"]) == 2
    assert_one_line_error(capsys, 2, "config.json missing or corrupt")


# ---------------------------------------------------------------------------------------------- the machine says no

UNPRIVILEGED = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []


def as_user(script: str, cwd: Path, limit_bytes: int = 0) -> list[dict]:
    """Run recur.cli.main over the argv lists `script` prints, in a fresh unprivileged process (and under a
    file-size limit when given); returns [{rc, err}] per call."""
    code = textwrap.dedent(f"""
        import io, json, resource, signal, sys, contextlib
        if {limit_bytes}:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes}))
        from recur.cli import main
        out = []
        for argv in {script}:
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc = main(argv)
            out.append({{"rc": rc, "err": err.getvalue()}})
        print(json.dumps(out))
    """)
    if UNPRIVILEGED and shutil.which("setpriv") is None:
        pytest.skip("tests run as root and setpriv is missing: cannot make a directory read-only for them")
    if UNPRIVILEGED and subprocess.run(UNPRIVILEGED + [sys.executable, "-c", "import recur"], env=ENV).returncode:
        pytest.skip("tests run as root and an unprivileged user cannot run this Python: cannot test read-only places")
    done = subprocess.run(UNPRIVILEGED + [sys.executable, "-c", code], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture
def shared_tmp():
    """A scratch directory the unprivileged user of `as_user` can reach (pytest's own are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="recur-faults-"))
    path.chmod(0o755)
    yield path
    for p in path.rglob("*"):
        if p.is_dir():
            p.chmod(0o755)
    shutil.rmtree(path)


def test_read_only_places_are_one_line(run, shared_tmp):
    ro = shared_tmp / "ro"
    shutil.copytree(run.parent, ro)
    for p in [ro, *ro.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222 | (0o555 if p.is_dir() else 0o444))
    before = files(ro)
    try:
        calls = [["prepare", "micro", "--out", str(ro / "new")],  # into a read-only place
                 ["train", "micro", "train.precision=float32"],  # from a read-only working directory
                 ["train", "--resume", str(ro / "run"), "train.steps=20"],  # a read-only run
                 ["eval", str(ro / "run"), "--limit", "4"]]  # reading it is fine
        res = as_user(repr(calls), cwd=ro)
    finally:
        for p in [ro, *ro.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    for r in res[:3]:
        assert r["rc"] == 2 and r["err"].count("\n") == 1 and r["err"].startswith("recur: error: "), r
    assert "cannot write the dataset" in res[0]["err"] and "Permission denied" in res[0]["err"]
    assert "cannot write" in res[1]["err"]
    assert "not writable" in res[2]["err"]
    assert res[3]["rc"] == 0, res[3]
    assert files(ro) == before


def test_a_full_disk_during_a_checkpoint_keeps_the_last_good_one(run, shared_tmp):
    work = shared_tmp / "w"
    shutil.copytree(run.parent, work)
    work.chmod(0o777)
    for p in work.rglob("*"):
        p.chmod(0o777 if p.is_dir() else 0o666)
    ckpt = list_checkpoints(work / "run")[-1]
    big = max(p.stat().st_size for p in ckpt.iterdir())
    res = as_user(repr([["train", "--resume", str(work / "run"), "train.steps=18", "train.eval_every=0"]]), cwd=work,
                  limit_bytes=big - 1)  # the log and config fit, a checkpoint file does not
    assert res[0]["rc"] == 2 and res[0]["err"].count("\n") == 1, res
    assert "cannot write checkpoint step_0000018" in res[0]["err"] and "step_0000012" in res[0]["err"]
    assert [p.name for p in (work / "run" / "checkpoints").iterdir()] == ["step_0000006", "step_0000012"]  # no .tmp
    read_model(work / "run")


def test_a_closed_pipe_is_not_a_traceback():
    done = subprocess.run(f"{sys.executable} -m recur.cli keys | head -1", shell=True, env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.count("\n") == 1 and done.stderr == ""


def test_small_things(run, tmp_path, capsys):
    assert main(["profile", str(run), "--out", str(tmp_path / "p"), "--limit", "4"]) == 0
    assert not (tmp_path / "p" / "profile.png").exists()  # plots go under plots/
    assert main(micro_args(tmp_path, "r", "eval.show=1")) == 0
    assert "1 unseen puzzle, answered" in capsys.readouterr().out
    dataset = Dataset(tmp_path / "data")
    assert dataset.fingerprint == json.loads((tmp_path / "data" / "metadata.json").read_text())["fingerprint"]
    assert np.all(np.asarray(dataset.splits["train"].arrays["inputs"]) >= 0)
