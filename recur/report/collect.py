"""Gather what a run left on disk, plus its recursion on a sample of test puzzles, into one JSON-able dict.

A path given to the report is one of:
  a run directory     config.json, metrics.jsonl, summary.json, checkpoints/, profile.json (as written by
                      `recur train` and `recur profile`); a run still training or stopped early has some
                      of them, and the report shows what exists and says what is missing;
  a comparison        results.json and table.md of `recur compare`, one run directory per arm;
  a checkpoint        a checkpoint directory or model.safetensors (its header holds config and dataset).

The recursion is measured with the newest checkpoint on the first `examples` test examples of a
fixed permutation (seed 0): accuracy after every y-update and every supervision step, and the
steps adaptive halting takes. `sample` of those examples are kept whole for the step-through
viewer (see `select`). The dict's layout is described in recur/report/__init__.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..checkpoint import MODEL_FILE, list_checkpoints
from ..errors import RecurError
from ..losses import IGNORE
from .trace import trace_puzzles

SAMPLE = 24
"""Puzzles kept whole for the step-through viewer (per run)."""
EXAMPLES = 256
"""Test examples the recursion statistics are measured on (per run)."""
BATCH = 256
CURVE_POINTS = 2000
"""Training records kept per curve; longer logs are thinned evenly (the last record always stays)."""
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
"""Token t is ALPHABET[t] in the sample's token strings (vocabularies larger than this use int lists)."""
TRAIN_KEYS = ("step", "loss", "lm_loss", "halt_loss", "accuracy", "exact_accuracy", "halt_accuracy", "lr",
              "elapsed_s")
EVAL_KEYS = ("step", "train_s", "exact_accuracy", "token_accuracy", "exact_adaptive", "mean_steps_adaptive",
             "halt_accuracy", "exact_per_step", "token_per_step", "task")


def read_json(path: Path, notes: list[str], what: str) -> dict | None:
    """A JSON file's object, or None with a note saying why (missing, unreadable, cut off)."""
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        notes.append(f"{path.name} is unreadable ({e}): {what} left out")
        return None
    if not isinstance(value, dict):
        notes.append(f"{path.name} does not hold a JSON object: {what} left out")
        return None
    return value


def read_metrics(path: Path) -> tuple[list[dict], list[str]]:
    """The records of a metrics.jsonl and notes on what was left out. A last line without its newline is a
    record cut off mid-write (a run still writing, or killed while writing): it is skipped, not an error."""
    if not path.exists():
        return [], ["no metrics.jsonl: no training curves"]
    try:
        lines = path.read_text().split("\n")
    except (OSError, UnicodeDecodeError) as e:
        return [], [f"metrics.jsonl is unreadable ({e}): no training curves"]
    records, notes = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None
        if isinstance(rec, dict) and "step" in rec:
            records.append(rec)
        elif number == len(lines):  # no newline after it: the writer had not finished the line
            notes.append(f"metrics.jsonl line {number} is cut off mid-record ({len(line)} characters, no newline): "
                         f"it is left out, so the curves end at step {records[-1]['step'] if records else 0}")
        else:
            notes.append(f"metrics.jsonl line {number} is not a metrics record: it is left out")
    return records, notes


def _columns(records: list[dict], keys: tuple[str, ...], limit: int) -> dict[str, list]:
    if len(records) > limit:  # evenly thinned, the last record kept
        keep = np.unique(np.linspace(0, len(records) - 1, limit).round().astype(int))
        records = [records[i] for i in keep]
    return {k: [r.get(k) for r in records] for k in keys if any(k in r for r in records)}


def _kind(path: Path) -> str:
    """run, comparison or checkpoint; RecurError (one line) for anything else."""
    if not path.exists():
        raise RecurError(f"{path} does not exist")
    if path.is_file():
        if path.suffix == ".safetensors":  # a checkpoint's model file, or an exported model (recur export)
            return "checkpoint"
        raise RecurError(f"{path} is a file, not a run directory, a comparison directory or a checkpoint")
    if (path / "config.json").is_file():
        return "run"
    if (path / "results.json").is_file():
        return "comparison"
    if (path / MODEL_FILE).is_file():
        return "checkpoint"
    raise RecurError(f"{path} is not a run directory (no config.json), a comparison directory (no results.json) "
                     f"or a checkpoint (no {MODEL_FILE})")


def comparison_runs(path: Path, notes: list[str]) -> tuple[dict, list[Path]]:
    """A comparison's description and table, and its arms' run directories in the table's order."""
    results = read_json(path / "results.json", notes, "the comparison's results") or {}
    spec = results.get("spec") or {}
    table = (path / "table.md").read_text() if (path / "table.md").is_file() else ""
    dirs = sorted(p for p in path.iterdir() if p.is_dir() and (p / "config.json").is_file())
    order = list(spec.get("arms") or {})
    rank = {arm: i for i, arm in enumerate(order)}
    dirs.sort(key=lambda p: (rank.get(p.name.rsplit("-s", 1)[0], len(order)), p.name))
    if not dirs:
        notes.append(f"comparison {path.name} holds no arm run directories")
    info = {"name": path.name, "path": str(path), "description": spec.get("description", ""), "table": table,
            "runs": [f"{path.name}/{d.name}" for d in dirs]}
    return info, dirs


def collect(paths: list[str | Path], sample: int = SAMPLE, examples: int = EXAMPLES, device: str = "cpu",
            data: str | Path | None = None) -> dict:
    """The report of every path (runs, comparisons, checkpoints), side by side."""
    if sample < 0 or examples < 1:
        raise RecurError("--sample must be >= 0 and --examples >= 1")
    t0 = time.perf_counter()
    runs, comparisons, notes = [], [], []
    for p in map(Path, paths):
        kind = _kind(p)
        if kind == "comparison":
            info, dirs = comparison_runs(p, notes)
            comparisons.append(info)
            runs += [collect_run(d, sample, examples, device, data, name=f"{p.name}/{d.name}") for d in dirs]
        else:
            runs.append(collect_run(p, sample, examples, device, data))
    return {"format": "recur-report", "version": 1, "recur": __version__,
            "generated": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": time.perf_counter() - t0,
            "runs": runs, "comparisons": comparisons, "notes": notes}


def _name(path: Path) -> str:
    """A run's directory name; a checkpoint's step directory; an exported model file's stem."""
    if path.name == MODEL_FILE:
        return path.parent.name
    return path.stem if path.is_file() else path.name


def collect_run(path: str | Path, sample: int = SAMPLE, examples: int = EXAMPLES, device: str = "cpu",
                data: str | Path | None = None, name: str | None = None) -> dict:
    """One run directory or checkpoint as a dict (see the module docstring); never raises for what is missing,
    it says so in `notes`."""
    path = Path(path)
    kind = _kind(path)
    notes: list[str] = []
    run = {"name": name or _name(path), "path": str(path), "kind": kind,
           "notes": notes, "meta": {}, "config": None, "summary": None, "curves": None, "eval": None,
           "checkpoints": [], "checkpoint": None, "data": None, "params": None, "cost": None, "wall_s": None,
           "train_s": None, "profile": None, "recursion": None, "sample": None}
    if kind == "run":
        _read_run_files(path, run, notes)
        ckpts = list_checkpoints(path)
        run["checkpoints"] = [{"name": c.name, "step": int(c.name.removeprefix("step_"))} for c in ckpts]
        if not ckpts:
            notes.append("no checkpoint yet: the recursion, the halting steps and the step-through viewer need one")
    else:
        notes.append("a checkpoint, not a run directory: no training curves or run files")
        ckpts = [path]
    model = ckpt = None
    for ckpt in reversed(ckpts):  # the newest checkpoint that loads
        if (model := _load(ckpt, device, notes)) is not None:
            break
    if model is not None:
        run["checkpoint"] = {"name": ckpt.parent.name if ckpt.name == MODEL_FILE else ckpt.name,
                             "step": model.meta.get("step")}
        if run["config"] is None:
            run["config"] = model.meta.get("config")
        if run["params"] is None:  # as summary.json counts them: puzzle embeddings are per-puzzle tables
            run["params"] = sum(p.numel() for n, p in model.module.named_parameters() if not n.startswith("puzzle_emb"))
    if model is not None and model.cfg.model.arch == "lm":  # the viewer steps through puzzle recursions
        notes.append("a language model: training curves and costs only (no step-through viewer; "
                     "`recur eval RUN --depth ...` measures it at any depth)")
        model = None
    record = run["meta"].get("dataset") or (model.meta.get("dataset") if model else None)
    dataset = _dataset(data, record, model.run_dir if model else path, run, notes)
    run["cost"] = _cost(run, model)
    if model is not None and dataset is not None:
        try:
            dataset.check_model(model.info)
        except RecurError as e:
            notes.append(f"{e}: no recursion measured")
            dataset = None
    if model is not None and dataset is not None:
        split = dataset.splits.get("test")
        if split is None or len(split) == 0:
            notes.append(f"dataset {dataset.path} has no test examples: no recursion measured")
        else:
            run["recursion"], run["sample"] = measure(model, split, sample, examples)
    return run


def _read_run_files(path: Path, run: dict, notes: list[str]) -> None:
    cfg = read_json(path / "config.json", notes, "the run's settings")
    if cfg is not None:
        run["config"] = cfg.get("config")
        run["meta"] = {k: v for k, v in cfg.items() if k != "config"}
    records, metric_notes = read_metrics(path / "metrics.jsonl")
    notes += metric_notes
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    run["curves"] = {"train": _columns(train, TRAIN_KEYS, CURVE_POINTS), "eval": _columns(evals, EVAL_KEYS, CURVE_POINTS)}
    summary = read_json(path / "summary.json", notes, "the final results")
    if summary is None:
        step = max((r["step"] for r in records), default=0)
        notes.append(f"no summary.json: the run is still training or stopped before its end (last record at "
                     f"step {step}); the page shows what it has written so far")
    else:
        run["summary"] = summary
        run["params"] = summary.get("params")
        run["wall_s"], run["train_s"] = summary.get("wall_s"), summary.get("train_s")
    last_eval = (summary or {}).get("eval") or (evals[-1] if evals else None)
    run["eval"] = {k: last_eval[k] for k in EVAL_KEYS + ("examples", "halt", "net_calls", "flops", "net_calls_adaptive")
                   if k in last_eval} if last_eval else None
    if run["wall_s"] is None and train:
        run["wall_s"] = train[-1].get("elapsed_s")
    run["profile"] = read_json(path / "profile.json", notes, "the profiler's margins and dead steps")


def _load(ckpt: Path, device: str, notes: list[str]):
    from ..api import load

    try:
        return load(ckpt, device)
    except RecurError as e:
        notes.append(f"checkpoint {ckpt.name} cannot be loaded: {e}")
        return None


def _dataset(data, record, run_dir: Path, run: dict, notes: list[str]):
    """The dataset given (`data`), else the one the run recorded, found wherever it is now (recur.data.find)."""
    from ..data import Dataset, find

    if not (data or record):
        notes.append("the run does not say which dataset it used: no recursion measured (pass --data DIR)")
        return None
    try:
        ds = Dataset(data or find(record, run_dir))
    except RecurError as e:
        notes.append(f"dataset unavailable ({e}): no data summary, no recursion measured (pass --data DIR)")
        return None
    run["data"] = {"path": str(ds.path), "task": ds.meta["task"], "info": ds.info, "splits": ds.meta["splits"],
                   "settings": ds.meta.get("settings")}
    return ds


def _cost(run: dict, model) -> dict | None:
    """Net calls and matmul FLOPs per example: the run's own figures, else what the model's shape implies."""
    s, ev = run["summary"] or {}, run["eval"] or {}
    cost = {"train_net_calls": s.get("train_net_calls_per_example"), "train_flops": s.get("train_flops_per_example"),
            "eval_net_calls": ev.get("net_calls"), "eval_flops": ev.get("flops"),
            "adaptive_net_calls": ev.get("net_calls_adaptive"),
            "net_calls_per_step": s.get("net_calls_per_step")}
    if model is not None:
        n_sup = model.n_sup
        cost["net_calls_per_step"] = cost["net_calls_per_step"] or model.module.net_calls
        if cost["eval_net_calls"] is None:
            cost["eval_net_calls"] = n_sup * model.module.net_calls
            cost["eval_flops"] = n_sup * model.module.step_flops(False)
    return cost if any(v is not None for v in cost.values()) else None


def _encode(row: np.ndarray, vocab: int) -> str | list[int]:
    return "".join(ALPHABET[t] for t in row.tolist()) if vocab <= len(ALPHABET) else row.tolist()


def measure(model, split, sample: int, examples: int) -> tuple[dict, dict]:
    """(recursion statistics over the first `examples` of a fixed permutation of the split, the viewer sample)."""
    rec, dev = model.cfg.recursion, model.device
    n_sup, threshold = model.n_sup, model.cfg.eval.halt_threshold
    idx = np.sort(np.random.default_rng(0).permutation(len(split))[:examples])
    exact = token = halt_counts = None
    never = 0
    kept: dict[str, list] = {"tokens": [], "inputs": [], "labels": [], "scores": []}
    for lo in range(0, len(idx), BATCH):
        b = split.batch(idx[lo:lo + BATCH])
        inputs = torch.from_numpy(b["inputs"]).to(dev)
        tr = trace_puzzles(model.module, inputs, torch.from_numpy(b["puzzle_ids"]).to(dev), n_sup, rec.feedback,
                           rec.act)
        tokens = torch.where(inputs == IGNORE, IGNORE, tr.tokens).cpu()  # [P, b, L]; PAD stays PAD
        labels = torch.from_numpy(b["labels"])
        valid = labels != IGNORE
        right = (tokens == labels) & valid
        e = (right.sum(-1) == valid.sum(-1)).double().sum(1)  # [P] examples exactly right at each point
        t = (right.sum(-1) / valid.sum(-1).clamp_min(1)).double().sum(1)  # [P]
        exact, token = (e, t) if exact is None else (exact + e, token + t)
        score = tr.halt_score.cpu()
        fired = score > threshold
        first = torch.where(fired.any(0), fired.int().argmax(0) + 1, 0)  # [b] 1-based halting step, 0: never
        counts = torch.bincount(first, minlength=n_sup + 1)
        never += int(counts[0])
        halt_counts = counts[1:] if halt_counts is None else halt_counts + counts[1:]
        kept["tokens"].append(tokens.numpy().astype(np.uint8))
        kept["inputs"].append(b["inputs"])
        kept["labels"].append(b["labels"])
        kept["scores"].append(score.numpy())
    n = len(idx)
    ends = [i for i in range(len(tr.step)) if i == len(tr.step) - 1 or tr.step[i + 1] != tr.step[i]]
    per_point = {"step": tr.step, "cycle": tr.cycle, "net_calls": tr.net_calls,
                 "exact": (exact / n).tolist(), "token": (token / n).tolist()}
    recursion = {"checkpoint_step": model.meta.get("step"), "split": "test", "examples": n, "n_sup": n_sup,
                 "points_per_step": len(tr.step) // n_sup, "net_calls_per_step": model.module.net_calls,
                 "per_point": per_point,
                 "per_step": {"exact": [per_point["exact"][i] for i in ends], "token": [per_point["token"][i] for i in ends]},
                 "halting": None if rec.act == "off" else
                 {"act": rec.act, "threshold": threshold, "counts": halt_counts.tolist(), "never": never}}
    tokens = np.concatenate(kept["tokens"], axis=1)  # [P, n, L]
    inputs, labels = np.concatenate(kept["inputs"]), np.concatenate(kept["labels"])
    scores = np.concatenate(kept["scores"], axis=1)  # [N_sup, n]
    return recursion, select(model, tokens, inputs, labels, scores, idx, ends, sample, threshold, tr)


def select(model, tokens, inputs, labels, scores, idx, ends, sample: int, threshold: float, tr) -> dict:
    """The viewer's puzzles: taken in turn from four groups (solved or not, x changed its mind or not), each in
    the measured order, so a small sample still shows every kind. Changed its mind: the answer still changes
    after the first supervision step."""
    valid = labels != IGNORE
    solved = ((tokens[-1] == labels) | ~valid).all(-1)  # [n]
    later = tokens[ends[0]:]  # from the end of step 1 on
    changed = (later[1:] != later[:-1]).any(-1).any(0) if len(later) > 1 else np.zeros(len(idx), bool)
    groups = [np.flatnonzero(solved & changed), np.flatnonzero(~solved & changed),
              np.flatnonzero(solved & ~changed), np.flatnonzero(~solved & ~changed)]
    order, depth = [], 0
    while len(order) < min(sample, len(idx)):
        order += [int(g[depth]) for g in groups if depth < len(g)][:sample - len(order)]
        depth += 1
    vocab, act = model.info["vocab_size"], model.cfg.recursion.act
    puzzles = []
    for i in order:
        fired = np.flatnonzero(scores[:, i] > threshold)
        puzzles.append({
            "example": int(idx[i]), "input": _encode(inputs[i], vocab), "label": _encode(labels[i], vocab),
            "trace": [_encode(tokens[p, i], vocab) for p in range(len(tokens))],
            "halt": None if act == "off" else (1 / (1 + np.exp(-scores[:, i].astype(np.float64)))).round(4).tolist(),
            "halt_step": None if act == "off" else (int(fired[0]) + 1 if len(fired) else None),
            "solved": bool(solved[i]), "changed": bool(changed[i]),
            "valid": bool(model.task.verify(inputs[i], tokens[-1, i], model.info))})
    return {"task": model.task.name, "info": model.info, "size": len(puzzles), "measured": len(idx),
            "encoding": "chars" if vocab <= len(ALPHABET) else "ints", "alphabet": ALPHABET,
            "points": {"step": tr.step, "cycle": tr.cycle, "net_calls": tr.net_calls},
            "counts": {"solved": int(solved.sum()), "changed": int(changed.sum()), "measured": len(idx)},
            "puzzles": puzzles}
