"""Train several configurations on one task under one budget, and compare them.

A comparison spec is a TOML file (shipped ones live in recur/comparisons/):

    description = "TRM vs HRM vs transformers on 6x6 Sudoku, CPU"
    base = "quickstart"                 # every arm starts from this preset...
    shared = ["train.steps=900"]        # ...plus these settings: the common budget
    seeds = [0]                         # each arm is trained once per seed
    reference = "trm"                   # optional: report each arm's time to reach this arm's accuracy
    [arms]                              # name = its own settings, in table order
    trm = []
    hrm = ["model.separate_nets=true", "model.grad=one_step", "recursion.act=q_learning"]

`recur compare SPEC [key=value ...]` trains every arm and seed into
runs/compare-<name>-<time>/<arm>-s<seed>/, profiles each trained arm (recur.profile: dead
recursion steps, the net calls that suffice) and writes table.md, results.json and per_step.png
(exact accuracy after each supervision step, and against net calls per example) beside them.

Language-model comparisons (arms with model.arch=lm) report instead validation NLL, unique parameters,
training and generation tokens/s and KV-cache bytes, and for recurrent-depth arms the accuracy at each
test-time depth of `depths` and what each exit criterion saves. With `flops = F` in the spec every arm
trains for the optimizer steps that spend F training FLOPs (its own FLOPs per token x the tokens of a
step; the recurrent family at the expectation of its sampled depth): equal compute, not equal steps.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .config import load_config, preset_path, read_toml
from .data import Dataset, prepare
from .errors import RecurError
from .plots import have_matplotlib, save, subplots
from .profile import profile
from .runlog import read_metrics
from .train import Trainer

PROFILE_EXAMPLES = 500  # profiling every arm on this many held-out examples keeps it a small share of the run

COMPARISON_DIR = Path(__file__).parent / "comparisons"


def list_comparisons() -> dict[str, str]:
    return {p.stem: read_toml(p).get("description", "") for p in sorted(COMPARISON_DIR.glob("*.toml"))}


def load_spec(name: str) -> dict:
    path = Path(name) if name.endswith(".toml") or "/" in name else COMPARISON_DIR / f"{name}.toml"
    if not path.is_file():
        raise RecurError(f"unknown comparison '{name}' (shipped: {', '.join(list_comparisons())}; or give a .toml file)")
    spec = read_toml(path)
    unknown = set(spec) - {"description", "base", "shared", "seeds", "arms", "reference", "flops", "depths"}
    if unknown:
        raise RecurError(f"comparison {path}: unknown keys {', '.join(sorted(unknown))} "
                         f"(valid: description, base, shared, seeds, reference, arms, flops, depths)")
    if not isinstance(spec.get("flops", 0), (int, float)) or spec.get("flops", 0) < 0:
        raise RecurError(f"comparison {path}: flops must be a number of training FLOPs (0 = equal steps)")
    arms = spec.get("arms")
    if not isinstance(arms, dict) or not arms or not all(isinstance(v, list) for v in arms.values()):
        raise RecurError(f"comparison {path}: [arms] must map each arm name to a list of key=value settings")
    if spec.get("reference", next(iter(arms))) not in arms:
        raise RecurError(f"comparison {path}: reference '{spec['reference']}' is not one of its arms")
    preset_path(spec.get("base", "quickstart"))  # fails early on a bad preset name
    return {"name": path.stem, "base": spec.get("base", "quickstart"), "shared": list(spec.get("shared", [])),
            "seeds": list(spec.get("seeds", [0])), "arms": arms, "description": spec.get("description", ""),
            "reference": spec.get("reference", next(iter(arms))), "flops": float(spec.get("flops", 0)),
            "depths": list(spec.get("depths", [1, 2, 4, 8, 16, 32]))}


def arm_row(summary: dict, trainer: Trainer) -> dict:
    """What the table reports about one trained arm (evaluation with all N_sup steps, then the profiler)."""
    cfg, model, ev = trainer.cfg, trainer.eval_model, summary["eval"]
    prof = profile(model, trainer.test_split, cfg.recursion.n_sup, cfg.eval.batch_size or cfg.train.batch_size,
                   trainer.device, cfg.recursion.feedback, PROFILE_EXAMPLES)
    evals = [(r["train_s"], r["exact_accuracy"]) for r in read_metrics(trainer.run_dir) if r["kind"] == "eval"]
    return {"params": summary["params"], "exact": ev["exact_accuracy"], "token": ev["token_accuracy"],
            "exact_adaptive": ev["exact_adaptive"], "steps_adaptive": ev["mean_steps_adaptive"],
            "net_calls_eval": ev["net_calls"], "net_calls_adaptive": ev["net_calls_adaptive"],
            "flops_eval": ev["flops"], "layer_passes_eval": ev["net_calls"] * cfg.model.layers,
            "net_calls_train": summary["train_net_calls_per_example"], "flops_train": summary["train_flops_per_example"],
            "train_s": summary["train_s"], "steps": summary["step"], "evals": evals,
            "exact_per_step": ev["exact_per_step"], "net_calls_per_step": model.net_calls, "task": ev["task"],
            "dead_fraction": prof["dead_fraction"], "enough_net_calls": prof["enough_net_calls"]}


def lm_row(summary: dict, trainer: Trainer, depths: list[int]) -> dict:
    """What the table reports about one trained language model; recurrent arms also at each test-time depth and
    with each exit criterion (at the largest depth)."""
    from .lm_engine import evaluate_lm
    from .models.looped import EXIT_DEFAULTS

    model, ev, c = trainer.eval_model, summary["eval"], trainer.cfg
    row = {"params": model.param_count(), "nll": ev["nll"], "ppl": ev["ppl"], "token": ev["token_accuracy"],
           "exact": ev["exact_accuracy"], "depth": ev["mean_depth"], "task": ev["task"], "steps": summary["step"],
           "train_s": summary["train_s"], "train_flops": summary["train_flops"],
           "train_tokens_per_s": summary["train_tokens"] / max(summary["train_s"], 1e-9),
           "gen_tokens_per_s": generation_speed(model, trainer.test_split), "kv_bytes": model.kv_bytes_per_token(),
           "evals": [(r["train_s"], r["nll"]) for r in read_metrics(trainer.run_dir) if r["kind"] == "eval"]}
    if model.looped is not None:
        run = lambda **k: evaluate_lm(model, trainer.test_split, c.eval.batch_size or c.train.batch_size,  # noqa: E731
                                      trainer.device, limit=c.eval.max_examples, task=trainer.data.task,
                                      info=trainer.data.info, **k)
        row["by_depth"] = {d: run(depth=d) for d in depths}
        exits = [e for e in EXIT_DEFAULTS if e != "router" or c.model.lm.exit_router]
        row["by_exit"] = {e: run(depth=max(depths), exit=e) for e in exits}
    return row


def generation_speed(model, split, new_tokens: int = 64) -> float:
    """Tokens per second of one sequence decoded greedily with the KV cache after a test window's first tokens."""
    from .generate import stream

    n = min(new_tokens, model.context // 2)
    prompt = split.batch(np.zeros(1, dtype=np.int64))["inputs"][0, :max(1, model.context - n)]
    t = time.perf_counter()
    made = sum(1 for _ in stream(model, prompt.tolist(), n))
    return made / (time.perf_counter() - t)


def steps_for_flops(cfg, info: dict, flops: float) -> int:
    """Optimizer steps that spend `flops` training FLOPs at this config's FLOPs per token."""
    from .models import build_model
    from .models.looped import sample_depth

    model = build_model(cfg.model, info)
    lm = cfg.model.lm
    if model.looped is not None:  # the expectation over the depth sampler (10,000 draws, fixed seed)
        gen = torch.Generator().manual_seed(0)
        per_token = statistics.fmean(model.flops_per_token(depth=sample_depth(lm.mean_depth, lm.depth_sigma, gen),
                                                           training=True) for _ in range(10_000))
    else:
        per_token = model.flops_per_token(training=True)
    return max(1, int(flops // (per_token * cfg.train.batch_size * info["seq_len"])))


def time_to_reach(row: dict, target: float) -> float | None:
    """Training seconds at the first evaluation with exact accuracy >= target (None: never)."""
    return next((t for t, acc in row["evals"] if acc >= target - 1e-9), None)


def run(name: str, overrides: list[str] = (), out_dir: str = "runs", say=print) -> Path:
    """Train every arm of comparison `name`; returns the comparison directory."""
    spec = load_spec(name)
    root = Path(out_dir) / f"compare-{spec['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    # check every arm's settings before training anything
    configs = {(arm, seed): load_config(spec["base"], spec["shared"] + sets + [f"seed={seed}"] + list(overrides) +
                                        [f"train.out_dir={root}", f"train.run_name={arm}-s{seed}"])
               for arm, sets in spec["arms"].items() for seed in spec["seeds"]}
    kinds = {cfg.model.arch == "lm" for cfg in configs.values()}
    if len(kinds) > 1:
        raise RecurError(f"comparison {spec['name']}: mixes language models and puzzle models")
    lm = kinds.pop()
    if spec["flops"] and not lm:
        raise RecurError(f"comparison {spec['name']}: flops budgets are for language-model arms")
    rows: dict[str, list[dict]] = {}
    for (arm, seed), cfg in configs.items():
        say(f"== {arm} (seed {seed}) ==")
        if spec["flops"]:  # the steps follow from the data's context
            steps = steps_for_flops(cfg, Dataset(prepare(cfg.data)).info, spec["flops"])
            cfg = replace(cfg, train=replace(cfg.train, steps=steps))
            say(f"{arm}: {steps} optimizer steps spend {spec['flops']:.3g} training FLOPs")
        trainer = Trainer(cfg, Path(cfg.train.out_dir) / cfg.train.run_name, preset=spec["base"], say=say)
        summary = trainer.fit()
        rows.setdefault(arm, []).append(lm_row(summary, trainer, spec["depths"]) if lm else arm_row(summary, trainer))
    (root / "results.json").write_text(json.dumps({"spec": spec, "overrides": list(overrides), "arms": rows}, indent=1))
    table = render_lm_table(spec, rows) if lm else render_table(spec, rows)
    (root / "table.md").write_text(table + "\n")
    say("\n" + table)
    plot = None if lm else per_step_plot(root, rows)
    say(f"\nresults: {root / 'table.md'}" + (f"\nplot:    {plot}" if plot else ""))
    return root


def _mean(rows: list[dict], key: str, fmt: str) -> str:
    values = [r[key] for r in rows]
    text = format(statistics.fmean(values), fmt)
    return text if len(values) == 1 else f"{text} ({format(min(values), fmt)}–{format(max(values), fmt)})"


def render_table(spec: dict, rows: dict[str, list[dict]]) -> str:
    """A markdown table: one line per arm (means over seeds, with min–max when there are several)."""
    task_keys = sorted({k for rs in rows.values() for r in rs for k in r["task"]})
    ref = spec.get("reference") or next(iter(rows))
    target = statistics.fmean(r["exact"] for r in rows[ref])
    head = (["arm", "params", "exact (all steps)", "exact (adaptive)", "steps (adaptive)"] + task_keys +
            ["net calls/example (eval)", "GFLOP/example (eval)", "layer passes/example (eval)",
             "net calls/example (train)", "GFLOP/example (train)", "train s", f"train s to {ref}'s {target:.3f}",
             "dead steps", "net calls within 0.5 pt"])
    lines = [f"{spec['description']} — seeds {spec['seeds']}", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for arm, rs in rows.items():
        for r in rs:
            r.update({f"task:{k}": r["task"].get(k, float("nan")) for k in task_keys})
            r["gflop_eval"], r["gflop_train"] = r["flops_eval"] / 1e9, r["flops_train"] / 1e9
        reach = [time_to_reach(r, target) for r in rs]
        reached = "not reached" if None in reach else f"{statistics.fmean(reach):.0f}"
        cells = [arm, f"{rs[0]['params']:,}", _mean(rs, "exact", ".3f"), _mean(rs, "exact_adaptive", ".3f"),
                 _mean(rs, "steps_adaptive", ".1f")] + [_mean(rs, f"task:{k}", ".3f") for k in task_keys] + [
                 f"{rs[0]['net_calls_eval']:.0f}", _mean(rs, "gflop_eval", ".3g"), f"{rs[0]['layer_passes_eval']:.0f}",
                 _mean(rs, "net_calls_train", ".0f"), _mean(rs, "gflop_train", ".3g"), _mean(rs, "train_s", ".0f"),
                 reached, _mean(rs, "dead_fraction", ".2f"), _mean(rs, "enough_net_calls", ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_lm_table(spec: dict, rows: dict[str, list[dict]]) -> str:
    """Markdown tables for language-model arms: the main one, then (recurrent arms) accuracy by test-time depth
    and by exit criterion."""
    budget = f"{spec['flops']:.3g} training FLOPs per arm" if spec["flops"] else "the same optimizer steps per arm"
    head = ["arm", "unique params", "val NLL", "perplexity", "token acc", "exact", "steps", "train TFLOP",
            "train tokens/s", "generation tokens/s", "KV bytes/token", "mean depth"]
    lines = [f"{spec['description']} — {budget}, seeds {spec['seeds']}", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for arm, rs in rows.items():
        for r in rs:
            r["tflop"] = r["train_flops"] / 1e12
        lines.append("| " + " | ".join([arm, f"{rs[0]['params']:,}", _mean(rs, "nll", ".4f"), _mean(rs, "ppl", ".2f"),
                                        _mean(rs, "token", ".3f"), _mean(rs, "exact", ".3f"), f"{rs[0]['steps']}",
                                        _mean(rs, "tflop", ".3g"), _mean(rs, "train_tokens_per_s", ".0f"),
                                        _mean(rs, "gen_tokens_per_s", ".1f"), f"{rs[0]['kv_bytes']:.0f}",
                                        _mean(rs, "depth", ".2f")]) + " |")
    for arm, rs in rows.items():
        if "by_depth" not in rs[0]:
            continue
        depths = list(rs[0]["by_depth"])
        lines += ["", f"{arm}: exact accuracy (token accuracy) at test-time depth r", "",
                  "| r | " + " | ".join(str(d) for d in depths) + " |", "|" + "---|" * (len(depths) + 1),
                  "| exact | " + " | ".join(f"{statistics.fmean(r['by_depth'][d]['exact_accuracy'] for r in rs):.3f}"
                                           for d in depths) + " |",
                  "| token | " + " | ".join(f"{statistics.fmean(r['by_depth'][d]['token_accuracy'] for r in rs):.3f}"
                                           for d in depths) + " |"]
        full = rs[0]["by_depth"][depths[-1]]
        lines += ["", f"{arm}: per-token exit at r = {depths[-1]} (reference thresholds)", "",
                  "| exit | exact | token acc | mean depth | compute saved |", "|---|---|---|---|---|",
                  f"| none | {full['exact_accuracy']:.3f} | {full['token_accuracy']:.3f} | {full['mean_depth']:.2f} | 0% |"]
        for e, res in rs[0]["by_exit"].items():
            saved = 1 - res["mean_depth"] / full["mean_depth"]
            lines.append(f"| {e} | {res['exact_accuracy']:.3f} | {res['token_accuracy']:.3f} | "
                         f"{res['mean_depth']:.2f} | {saved:.0%} |")
    return "\n".join(lines)


def per_step_plot(root: Path, rows: dict[str, list[dict]]) -> Path | None:
    """Exact accuracy after each supervision step, per arm: against the step and against net calls."""
    if not have_matplotlib():
        return None
    fig, ax = subplots(2)
    for arm, rs in rows.items():
        curve = [statistics.fmean(v) for v in zip(*(r["exact_per_step"] for r in rs))]
        steps = range(1, len(curve) + 1)
        ax[0].plot(steps, curve, "o-", label=arm)
        ax[1].plot([s * rs[0]["net_calls_per_step"] for s in steps], curve, "o-", label=arm)
    ax[0].set(title="test exact accuracy per supervision step", xlabel="supervision step", ylim=(0, 1.02))
    ax[1].set(title="... against net calls per example", xlabel="net calls per example", xscale="log", ylim=(0, 1.02))
    return save(fig, ax, root / "per_step.png")
