"""The README runs as written: every ```bash command and every ```python snippet (```text blocks are synopses).

Commands run in one scratch working directory, in order, in this process (`recur ...` calls recur.cli.main;
a `| tool` after it gets its output). What the test cannot or need not repeat is skipped: pip installs (this
environment is installed) and `python -m pytest` (this is the suite). Training commands get the settings of
SHRINK appended so the whole README runs in seconds; the other substitutions in EDITS are listed here, each
must match the README, so an edited README cannot slip past its test.
"""

from __future__ import annotations

import io
import re
import shlex
import subprocess
from contextlib import redirect_stdout
from pathlib import Path


from recur.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"

SHRINK = ["data.sudoku.train_size=40", "data.sudoku.test_size=8", "data.sudoku.augmentations=1", "train.steps=4",
          "train.batch_size=16", "train.eval_every=2", "train.ckpt_every=2", "train.log_every=2",
          "train.progress=false", "train.precision=float32"]
EDITS = {  # README text -> what the test runs instead
    "recur train --resume runs/first train.steps=1200": "recur train --resume runs/first train.steps=6",
    'recur.load_config("quickstart", ["train.steps=100"])': 'recur.load_config("quickstart", ["train.steps=100"] + SHRINK)',
}


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def commands() -> list[str]:
    out = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                out += [part.strip() for part in line.split(" && ")]
    return out


def run(command: str) -> None:
    left, _, pipe = command.partition(" | ")
    argv = shlex.split(left)
    assert argv[0] == "recur", f"README command {command!r}: only recur commands (and installs) can run here"
    if argv[1] == "train" and "--resume" not in argv:
        argv += SHRINK
    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(argv[1:])
    assert rc == 0, f"README command {command!r} exited {rc}"
    if pipe:
        subprocess.run(shlex.split(pipe), input=out.getvalue(), text=True, check=True, capture_output=True)


def test_every_readme_edit_applies():
    text = README.read_text()
    missing = [old for old in EDITS if old not in text]
    assert not missing, f"the README no longer holds {missing}: update EDITS in {__file__}"


def test_the_readme_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cmds = [EDITS.get(c, c) for c in commands()]
    skipped = [c for c in cmds if c.startswith(("python -m pip install", "python -m pytest"))]
    assert skipped and len(skipped) < len(cmds)
    for command in cmds:
        if command not in skipped:
            run(command)
    snippets = blocks("python")
    assert snippets
    namespace = {"SHRINK": SHRINK}
    for code in snippets:
        for old, new in EDITS.items():
            code = code.replace(old, new)
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 (the README's own code)
    assert (tmp_path / "runs" / "mine" / "summary.json").is_file()
