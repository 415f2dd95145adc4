"""`recur report`: the HTML page, the data it embeds, its answers to incomplete runs, and `solve --show-steps`."""

import json
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

import recur
from conftest import assert_one_line_error
from recur.cli import main
from recur.data import Dataset
from recur.errors import RecurError
from recur.report import build
from recur.report.collect import ALPHABET, read_metrics
from recur.report.steps import grid, use_color
from recur.tasks.sudoku import generate


class Page(HTMLParser):
    """Element ids, script elements, and every src/href of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.ids, self.scripts, self.links, self._script = set(), [], [], None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        self.links += [a[k] for k in ("src", "href") if k in a]
        if tag == "script":
            self._script = [a, ""]

    def handle_data(self, data):
        if self._script is not None:
            self._script[1] += data

    def handle_endtag(self, tag):
        if tag == "script" and self._script is not None:
            self.scripts.append(tuple(self._script))
            self._script = None


def embedded(path) -> dict:
    page = Page(path.read_text())
    (data,) = [body for attrs, body in page.scripts if attrs.get("id") == "recur-data"]
    return json.loads(data)


def decode(row) -> list[int]:
    return [ALPHABET.index(c) for c in row] if isinstance(row, str) else list(row)


@pytest.fixture(scope="module")
def report(micro_run, tmp_path_factory):
    """The micro run's report (written outside the shared run, which stays untouched), and its data."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    path, data = build([micro_run], out, device="cpu")
    return path, data


def test_page_is_self_contained_with_every_section(report):
    path, data = report
    page = Page(path.read_text())
    assert {"overview", "curves", "recursion", "viewer", "slider", "grids", "recur-data"} <= page.ids
    assert page.links == ["#overview", "#curves", "#recursion", "#viewer"]  # nothing is fetched: only anchors
    assert all("src" not in attrs for attrs, _ in page.scripts)  # every script is inline
    assert embedded(path) == json.loads(json.dumps(data))  # the blob decodes to what was collected
    assert path.stat().st_size < 200_000


def test_trace_of_puzzle_0_matches_a_direct_model_run(report, micro_run):
    data = report[1]
    run = data["runs"][0]
    sample = run["sample"]
    assert sample["size"] == 24 and sample["measured"] == 32  # micro has 32 test puzzles: all measured
    p = sample["puzzles"][0]
    model = recur.load(micro_run, device="cpu")
    b = Dataset(micro_run.parent / "data").splits["test"].batch(np.array([p["example"]]))
    assert decode(p["input"]) == b["inputs"][0].tolist() and decode(p["label"]) == b["labels"][0].tolist()
    # every y-update, read by hand through the model's trace hook
    net, x, ids = model.module, torch.from_numpy(b["inputs"]), torch.from_numpy(b["puzzle_ids"])
    state, points, scores = net.init_state(1), [], []
    with torch.no_grad():
        for s in range(1, model.n_sup + 1):
            seen: list = []
            state, out = net(state, x, ids, torch.tensor([s], dtype=torch.int32), trace=seen)
            points += [o.logits.argmax(-1)[0].tolist() for o in seen]
            scores.append(torch.sigmoid(out.q_halt[0]).item())
    T = net.cfg.T
    assert len(points) == model.n_sup * T == len(sample["points"]["step"])
    assert [decode(t) for t in p["trace"]] == points
    assert p["halt"] == pytest.approx(scores, abs=1e-4)
    # the answer after each supervision step is what inference gives
    pred = model.predict(b["inputs"], halt="none")
    ends = [decode(p["trace"][i]) for i in range(T - 1, len(points), T)]
    assert ends == pred.per_step[:, 0].tolist()
    assert p["solved"] == bool((pred.tokens[0].numpy() == b["labels"][0]).all())


def test_recursion_statistics_agree_with_training_evaluation(report):
    run = report[1]["runs"][0]
    rec, ev = run["recursion"], run["summary"]["eval"]
    # the same weights (the checkpoint's EMA) on the same 32 test examples as the run's last evaluation
    assert rec["examples"] == ev["examples"] == 32
    assert rec["per_step"]["exact"] == pytest.approx(ev["exact_per_step"], abs=1e-6)
    assert rec["per_step"]["token"] == pytest.approx(ev["token_per_step"], abs=1e-6)
    assert len(rec["per_point"]["net_calls"]) == 8 and rec["per_point"]["net_calls"][-1] == 24
    assert sum(rec["halting"]["counts"]) + rec["halting"]["never"] == 32
    counts = run["sample"]["counts"]
    assert counts["solved"] == round(ev["exact_accuracy"] * 32)
    # the sample mixes the kinds: whichever groups exist appear among the first puzzles
    kinds = {(p["solved"], p["changed"]) for p in run["sample"]["puzzles"][:4]}
    assert len(kinds) == len({(p["solved"], p["changed"]) for p in run["sample"]["puzzles"]})
    assert run["params"] == run["summary"]["params"] and run["cost"]["eval_net_calls"] == 24
    assert run["curves"]["train"]["step"] == [4, 8, 12] and run["curves"]["eval"]["step"] == [6, 12]


def test_sample_is_deterministic_and_bounded(micro_run, tmp_path):
    _, a = build([micro_run], tmp_path / "a.html", sample=5, examples=20, device="cpu")
    _, b = build([micro_run], tmp_path / "b.html", sample=5, examples=20, device="cpu")
    pick = lambda d: [p["example"] for p in d["runs"][0]["sample"]["puzzles"]]  # noqa: E731
    assert pick(a) == pick(b) and len(pick(a)) == 5 and len(set(pick(a))) == 5
    assert a["runs"][0]["recursion"]["examples"] == 20


def test_not_a_run_is_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(capsys, main(["report", str(tmp_path / "empty")]), "is not a run directory")
    assert_one_line_error(capsys, main(["report", str(tmp_path / "nope")]), "does not exist")
    (tmp_path / "notes.txt").write_text("hello")
    assert_one_line_error(capsys, main(["report", str(tmp_path / "notes.txt")]), "is a file")


def test_existing_file_that_is_not_a_report_is_never_overwritten(micro_run, tmp_path, capsys):
    keep = tmp_path / "mine.html"
    keep.write_text("<html>my notes</html>")
    assert_one_line_error(capsys, main(["report", str(micro_run), "--out", str(keep), "--device", "cpu"]),
                          "is not a recur report")
    assert keep.read_text() == "<html>my notes</html>"
    out = tmp_path / "r.html"
    for _ in range(2):  # a report may replace an older report
        assert main(["report", str(micro_run), "--out", str(out), "--device", "cpu", "--sample", "2"]) == 0
    assert f"report: {out}" in capsys.readouterr().out


def test_truncated_metrics_and_a_run_still_training(micro_run, tmp_path):
    run = tmp_path / "live"
    shutil.copytree(micro_run, run)
    text = (run / "metrics.jsonl").read_text()
    lines = text.splitlines()
    nan_line = json.dumps({**json.loads(lines[0]), "step": 5, "loss": float("nan")})
    cut = lines[-1][: len(lines[-1]) // 2]  # the writer stopped halfway through the last record
    (run / "metrics.jsonl").write_text("\n".join(lines[:1] + [nan_line] + lines[1:-1]) + "\n" + cut)
    (run / "summary.json").unlink()
    records, notes = read_metrics(run / "metrics.jsonl")
    assert len(records) == len(lines) and len(notes) == 1 and f"line {len(lines) + 1} is cut off" in notes[0]
    path, data = build([run], device="cpu", sample=3)
    assert path == run / "report.html"
    r = embedded(path)["runs"][0]
    assert r["summary"] is None and any("no summary.json" in n for n in r["notes"])
    assert any("cut off mid-record" in n for n in r["notes"])
    assert None in r["curves"]["train"]["loss"]  # NaN is null in JSON
    assert r["sample"]["size"] == 3  # the checkpoints are there: the viewer still works


def test_run_without_checkpoints_reports_what_exists(micro_run, tmp_path):
    run = tmp_path / "early"
    shutil.copytree(micro_run, run, ignore=shutil.ignore_patterns("checkpoints", "summary.json"))
    path, _ = build([run], device="cpu")
    r = embedded(path)["runs"][0]
    assert r["sample"] is None and r["recursion"] is None and r["checkpoints"] == []
    assert any("no checkpoint yet" in n for n in r["notes"])
    assert r["curves"]["train"]["step"] == [4, 8, 12] and r["data"]["task"] == "sudoku"
    assert {"overview", "viewer"} <= Page(path.read_text()).ids


def test_corrupt_newest_checkpoint_falls_back_and_names_cannot_break_the_page(micro_run, tmp_path):
    run = tmp_path / "x<script>&y"
    shutil.copytree(micro_run, run, ignore=shutil.ignore_patterns("report.html"))
    newest = run / "checkpoints" / "step_0000012" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])
    path, _ = build([run], device="cpu", sample=1, examples=4)
    r = embedded(path)["runs"][0]
    assert r["name"] == run.name and r["checkpoint"]["step"] == 6  # the older checkpoint was used
    assert any("step_0000012 cannot be loaded" in n for n in r["notes"])
    assert "<title>recur report: x&lt;script&gt;&amp;y</title>" in path.read_text()
    assert "x<script>" not in path.read_text()  # in the data too, < is escaped


def test_comparison_directory_and_checkpoint_side_by_side(micro_run, tmp_path):
    comp = tmp_path / "compare-x"
    for arm in ("trm-s0", "hrm-s0"):
        shutil.copytree(micro_run, comp / arm, ignore=shutil.ignore_patterns("report.html"))
    (comp / "results.json").write_text(json.dumps({"spec": {"description": "two arms", "arms": {"trm": [], "hrm": []}}}))
    (comp / "table.md").write_text("two arms\n\n| arm | exact |\n|---|---|\n| trm | 0.5 |\n| hrm | 0.4 |\n")
    path, data = build([comp], device="cpu", sample=2)
    assert path == comp / "report.html"
    assert [r["name"] for r in data["runs"]] == ["compare-x/trm-s0", "compare-x/hrm-s0"]  # the spec's order
    assert data["comparisons"][0]["description"] == "two arms" and "| trm | 0.5 |" in data["comparisons"][0]["table"]
    ckpt = micro_run / "checkpoints" / "step_0000006"
    _, both = build([micro_run, ckpt], tmp_path / "both.html", device="cpu", sample=2)
    assert [r["kind"] for r in both["runs"]] == ["run", "checkpoint"]
    assert both["runs"][1]["checkpoint"]["step"] == 6 and both["runs"][1]["sample"]["size"] == 2


def test_show_steps_marks_exactly_the_changed_cells(micro_run, capsys, monkeypatch):
    puzzles, _, _ = generate(4, 1, seed=7)
    text = "".join(str(d) if d else "." for d in puzzles[0])
    assert main(["solve", text, "--model", str(micro_run), "--halt", "none", "--show-steps", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out  # not a terminal: no colour
    model = recur.load(micro_run, device="cpu")
    inputs, pred = model.solve([text], halt="none")
    blocks = re.findall(r"after supervision step (\d+): (\d+) cells? changed, halting confidence ([\d.]+)\n((?:.+\n?){5})", out)
    assert [int(b[0]) for b in blocks] == list(range(1, model.n_sup + 1))
    prev = inputs[0]
    for (step, count, conf, body), answer in zip(blocks, pred.per_step[:, 0].numpy()):
        rows = [ln for ln in body.splitlines() if not set(ln) <= set("-+")][:4]
        cells = [c for ln in rows for c in re.findall(r"[ \[].[ \]]", ln.replace("|", "").ljust(12))]
        assert len(cells) == 16
        marked = [c.startswith("[") for c in cells]
        assert marked == (answer != prev).tolist() and int(count) == sum(marked)
        assert [c[1] for c in cells] == ["." if t < 2 else str(t - 1) for t in answer]
        assert float(conf) == pytest.approx(torch.sigmoid(pred.halt_score[int(step) - 1, 0]).item(), abs=0.006)
        prev = answer
    assert "answer after 4 supervision steps" in out  # the usual summary follows


def test_grid_layouts_and_colour_switch(monkeypatch):
    info = {"seq_len": 6, "vocab_size": 11}
    tokens, inputs = np.array([2, 3, 10, 0, 0, 0]), np.array([10, 2, 3, 0, 0, 0])
    assert grid("sorting", info, tokens, inputs, tokens != inputs, False) == "[1][2][9]"
    maze = {"size": 2, "seq_len": 4}
    assert grid("maze", maze, np.array([3, 5, 1, 4]), np.array([3, 2, 1, 4]), np.array([0, 1, 0, 0], bool),
                True).splitlines() == [" S \x1b[1;33m[o]\x1b[0m", " #  G"]

    class Tty:
        def isatty(self):
            return True
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color(Tty())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color(Tty())


def test_build_needs_a_path():
    with pytest.raises(RecurError, match="at least one run"):
        build([])
