"""`recur` command line: a thin layer that parses arguments and calls the library.

    recur train [PRESET] [key=value ...] [--resume RUN]
    recur eval RUN_OR_CKPT [--data DIR] [--halt adaptive] [--guidance W]
    recur profile RUN_OR_CKPT [--data DIR] [--limit N]
    recur solve PUZZLE_OR_FILE [--model RUN_OR_CKPT] [--show-steps]
    recur report RUN [RUN ...] [--out report.html] [--sample N]
    recur prepare [PRESET] [key=value ...] [--out DIR]
    recur compare SPEC [key=value ...]
    recur presets | recur keys
    recur convert --from trm-reference|hrm-reference IN OUT

A user mistake prints one line `recur: error: ...` and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from .config import DEFAULT_PRESET, PRECISIONS, describe, list_presets, load_config
from .errors import RecurError


def cmd_train(a) -> None:
    from .train import Trainer, new_run_dir, resumed_config, run_record

    if a.resume:
        run_dir = Path(a.resume)
        preset = run_record(run_dir).get("preset", "")
        if a.preset and a.preset != preset:
            raise RecurError(f"--resume continues {run_dir} with its own settings (preset {preset or 'none'}); "
                             f"give only the key=value settings to change, e.g. train.steps=N")
        cfg = resumed_config(run_dir, a.overrides)
    else:
        preset = a.preset or DEFAULT_PRESET
        cfg = load_config(preset, a.overrides)
        run_dir = new_run_dir(cfg, preset)
    trainer = Trainer(cfg, run_dir, resume=bool(a.resume), preset=preset)
    try:
        trainer.say(f"run {run_dir}: {cfg.model.arch} on {cfg.data.task}, "
                    f"{sum(p.numel() for p in trainer.model.parameters()):,} params, device {trainer.device} "
                    f"({str(trainer.dtype).removeprefix('torch.')}), "
                    f"{trainer.dist.world} process(es)")
        summary = trainer.fit()
        if trainer.dist.main:
            _report(trainer, cfg, summary)
    except BaseException:
        trainer.dist.close(wait=False)
        raise
    finally:
        trainer.close()
    trainer.dist.close()
    if trainer.dist.world > 1:
        # a torchrun worker leaves here, with everything written and the process group closed: the C++ teardown of
        # an exiting gloo worker aborts it now and then ("terminate called without an active exception" after
        # Python has finished, ~1 run in 20 on a busy 2-core machine), which torchrun reports as a failed run
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def cmd_adapt(a) -> None:
    """`recur adapt MODEL key=value ...`: the model's own run settings, with the new tasks' data settings and the
    training budget from the command line, trained from the model's weights (train.init_from)."""
    from .api import load
    from .config import RunConfig, from_dict, override, validate
    from .train import Trainer, new_run_dir

    model = load(a.model, "cpu")
    if not any(o.startswith("data.") for o in a.overrides):
        raise RecurError("recur adapt needs the new tasks: give their data settings, e.g. "
                         "data.arc.train= data.arc.test=kaggle:evaluation2 (their demonstrations train, their test "
                         "inputs evaluate)")
    settings = model.meta["config"]
    for o in [f"train.init_from={model.source}", "train.run_name=", "data.dir="] + list(a.overrides):
        settings = override(settings, o)
    cfg = from_dict(RunConfig, settings)
    validate(cfg)
    run_dir = new_run_dir(cfg, "adapt")
    trainer = Trainer(cfg, run_dir, preset="adapt")
    try:
        trainer.say(f"adapt {model.describe()} -> {run_dir}: {cfg.train.steps} steps"
                    + (", embeddings only" if cfg.train.freeze else ""))
        summary = trainer.fit()
        _report(trainer, cfg, summary)
    finally:
        trainer.close()


def _report(trainer, cfg, summary) -> None:
    """The end of a training run: held-out accuracy, a few unseen puzzles answered, where things are."""
    from .api import Recur
    from .evaluate import show

    ev = summary["eval"]
    if cfg.model.arch == "lm":
        _report_lm(trainer, cfg, summary)
    elif ev:
        protocol = f"all {cfg.recursion.n_sup} steps" if ev["halt"] == "none" else "adaptive halting"
        print(f"\nheld-out exact accuracy {ev['exact_accuracy']:.3f} on {ev['examples']} puzzles ({protocol}; "
              f"adaptive halting: {ev['exact_adaptive']:.3f} with {ev['mean_steps_adaptive']:.1f} steps on average)"
              + "".join(f"\n{k}: {v:.3f}" for k, v in ev["task"].items()))
        print(f"cost per example: {summary['train_net_calls_per_example']:.1f} net calls "
              f"({summary['train_flops_per_example'] / 1e9:.3g} GFLOP) in training, {ev['net_calls']:.0f} net calls "
              f"({ev['flops'] / 1e9:.3g} GFLOP) in evaluation, {ev['net_calls_adaptive']:.1f} with adaptive halting")
    if cfg.eval.show and cfg.model.arch != "lm":
        model = Recur(trainer.eval_model, cfg, trainer.data.info, trainer.data.meta["task"], trainer.device, {})
        split = trainer.test_split
        idx = np.random.default_rng(cfg.seed).choice(len(split), size=min(cfg.eval.show, len(split)), replace=False)
        b = split.batch(np.sort(idx))
        pred = model.predict(b["inputs"], b["puzzle_ids"], halt="adaptive")
        print(f"\n{len(idx)} unseen puzzle{'s' * (len(idx) != 1)}, answered with adaptive halting:")
        for i in range(len(idx)):
            print("\n" + show(model.task, model.info, b["inputs"][i], pred.tokens[i].numpy(), int(pred.steps[i]),
                              b["labels"][i]))
    print(f"\ncheckpoint: {summary['checkpoint']}")
    print(f"plot:       {summary['plot'] or 'not drawn (install matplotlib: pip install recur[plot])'}")


def _report_lm(trainer, cfg, summary) -> None:
    """A language model's end of training: validation NLL, cost, and a few test prompts continued greedily."""
    from .api import RecurLM

    ev = summary["eval"]
    if ev:
        print(f"\nvalidation NLL {ev['nll']:.4f} per token (perplexity {ev['ppl']:.2f}) on {ev['tokens']:,} tokens; "
              f"token accuracy {ev['token_accuracy']:.3f}, exact {ev['exact_accuracy']:.3f}, mean depth "
              f"{ev['mean_depth']:.2f}" + "".join(f"\n{k}: {v:.3f}" for k, v in ev["task"].items()))
    print(f"{summary['unique_params']:,} unique parameters; {summary['train_tokens']:,} training tokens, "
          f"{summary['train_flops_per_token'] / 1e6:.3g} MFLOP per token")
    if cfg.eval.show and len(trainer.test_split):
        model = RecurLM(trainer.eval_model, cfg, trainer.data.info, trainer.data.meta["task"], trainer.device, {})
        idx = np.random.default_rng(cfg.seed).choice(len(trainer.test_split), size=min(cfg.eval.show,
                                                     len(trainer.test_split)), replace=False)
        print("\nheld-out prompts, continued greedily:")
        for i in np.sort(idx):
            prompt = _lm_prompt(model, trainer.test_split.batch(np.array([i]))["inputs"][0])
            text = "".join(piece for piece, _ in model.generate(prompt, 48))
            print(f"  {prompt!r} -> {text!r}")


def _lm_prompt(model, tokens) -> str:
    """A prompt cut from a test window: a synthetic task's question (up to '='), else its first half (at most 48
    tokens), leaving the model's context room to continue it."""
    if model.task.name != "text":
        return model.task.render(tokens, model.info).split("=", 1)[0] + "="
    return model.task.render(tokens[:min(48, len(tokens) // 2)], model.info)


def _check_counts(a) -> None:
    """The numeric options of eval/profile/solve that only make sense in some range."""
    for name, low in (("batch_size", 1), ("limit", 0), ("steps", 0), ("samples", 1)):
        value = getattr(a, name, None)
        if value is not None and value < low:
            raise RecurError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    if getattr(a, "noise", 0) < 0:
        raise RecurError(f"--noise must be >= 0, got {a.noise}")


def _load(path, a):
    """recur.load with the command's runtime options; the damaged newer checkpoints it skipped are noted on stderr
    (the command names the checkpoint it used in its output)."""
    from .api import load

    model = load(path, a.device, a.precision, a.compile)
    for note in model.notes:
        print(f"recur: note: {note}", file=sys.stderr)
    return model


def cmd_eval(a) -> None:
    from .api import RecurLM
    from .evaluate import evaluate

    _check_counts(a)
    model, split, data_dir = _model_and_split(a)
    if isinstance(model, RecurLM):
        return _eval_lm(a, model, split, data_dir)
    acc = model.task.evaluator(split, model.info)
    if a.submission and acc is None:
        raise RecurError(f"--submission writes ARC answers; {model.task.name} has none to write")
    unseen = _unseen_puzzles(model, split)
    if unseen:
        print(f"recur: note: {unseen} of the split's puzzles have puzzle ids whose embeddings this model never "
              f"trained (tasks it has not seen): expect them to score 0 unless adapted first (`recur adapt`)",
              file=sys.stderr)
    res = evaluate(model.module, split, a.steps or model.n_sup, a.batch_size, model.device, a.halt,
                   model.cfg.recursion.act, limit=a.limit, task=model.task, info=model.info,
                   feedback=model.cfg.recursion.feedback, guidance=a.guidance,
                   threshold=model.cfg.eval.halt_threshold if a.threshold is None else a.threshold,
                   samples=a.samples, noise=a.noise, acc=acc)
    if a.submission:
        from .tasks.arc.score import submission, write_submission

        print(f"submission: {write_submission(a.submission, submission(acc))}", file=sys.stderr)
    if a.json:
        print(json.dumps({"checkpoint": str(model.source), "step": model.meta.get("step"), **res}))
        return
    print(f"model {model.describe()}\non {data_dir}/{a.split}: {res['examples']} examples, halt={a.halt}")
    print(f"exact accuracy {res['exact_accuracy']:.4f}   token accuracy {res['token_accuracy']:.4f}   "
          f"adaptive: {res['exact_adaptive']:.4f} in {res['mean_steps_adaptive']:.2f} steps   "
          f"halting-head accuracy {res['halt_accuracy']:.4f}")
    print(f"net calls per example {res['net_calls']:.1f} ({res['flops'] / 1e9:.3g} GFLOP)")
    for name, value in res["task"].items():
        print(f"{name} {value:.4f}")
    print("exact accuracy after each supervision step:")
    print("  " + "  ".join(f"{i + 1}:{v:.3f}" for i, v in enumerate(res["exact_per_step"])))
    vote = res.get("vote", {})
    if "pass@1" in vote:
        ks = [k.removeprefix("pass@") for k in vote if k.startswith("pass@")]
        print(f"voted over every augmented version ({vote['tasks']} tasks, {vote['test_inputs']} test inputs):")
        print("  pass@k, per test input (ARC Prize, TRM): " + "  ".join(f"{k}:{vote['pass@' + k]:.3f}" for k in ks))
        print("  pass@k, all-or-nothing per task (HRM):   " + "  ".join(f"{k}:{vote['task_pass@' + k]:.3f}" for k in ks))
        print(f"  one canonical pass (the un-augmented version alone, per test input): {vote['canonical_pass@1']:.3f}")
        print(f"  per-example exact (one augmented version, no vote; not pass@k): {vote['per_example_exact']:.3f}")


def _unseen_puzzles(model, split) -> int:
    """Puzzles of the split whose embedding row is still all zero (its initialisation: never trained)."""
    import torch

    emb = getattr(model.module, "puzzle_emb", None)
    if emb is None or emb.shape[0] <= 1:
        return 0
    ids = np.unique(np.asarray(split.arrays["puzzle_ids"]))
    ids = ids[ids < emb.shape[0]]
    untouched = (emb.detach()[torch.as_tensor(ids)] == 0).all(-1)
    return int(untouched.sum())


def _eval_lm(a, model, split, data_dir) -> None:
    """Validation NLL / perplexity and accuracy of a language model; the recurrent family at each --depth and with
    --exit, whose cost is the mean depth per token."""
    from .lm_engine import evaluate_lm

    recurrent = model.module.looped is not None
    if not recurrent and (a.depth or a.exit):
        raise RecurError("--depth and --exit apply to recurrent-depth models (model.lm.family=recurrent)")
    try:
        depths = [int(d) for d in a.depth.split(",")] if a.depth else [None]
    except ValueError:
        raise RecurError(f"--depth takes depths like 1,2,4,8, got {a.depth!r}") from None
    if any(d is not None and d < 1 for d in depths):
        raise RecurError(f"--depth values must be >= 1, got {a.depth}")
    rows = [{"depth": d or (model.cfg.model.lm.mean_depth if recurrent else None), "exit": a.exit,
             **evaluate_lm(model.module, split, a.batch_size, model.device, limit=a.limit, task=model.task,
                           info=model.info, depth=d, exit=a.exit, threshold=a.threshold)} for d in depths]
    if a.json:
        print(json.dumps({"checkpoint": str(model.source), "step": model.meta.get("step"), "results": rows}))
        return
    print(f"model {model.describe()}\non {data_dir}/{a.split}: {rows[0]['examples']} windows, "
          f"{rows[0]['tokens']:,} supervised tokens")
    tasks = sorted({k for r in rows for k in r["task"]})
    print("| depth | exit | NLL | perplexity | token acc | exact | mean depth | MFLOP/token |" +
          "".join(f" {k} |" for k in tasks))
    print("|" + "---|" * (8 + len(tasks)))
    for r in rows:
        print(f"| {r['depth'] or '-'} | {r['exit'] or 'none'} | {r['nll']:.4f} | {r['ppl']:.2f} | "
              f"{r['token_accuracy']:.4f} | {r['exact_accuracy']:.4f} | {r['mean_depth']:.2f} | "
              f"{r['flops_per_token'] / 1e6:.3g} |" + "".join(f" {r['task'].get(k, float('nan')):.3f} |" for k in tasks))


def cmd_generate(a) -> None:
    import time

    from .api import RecurLM

    model = _load(a.path, a)
    if not isinstance(model, RecurLM):
        raise RecurError(f"{a.path} is a puzzle model; `recur solve` answers puzzles, `recur generate` is for "
                         f"language models (model.arch=lm)")
    options = {"temperature": a.temperature, "top_k": a.top_k, "seed": a.seed}
    if model.module.looped is not None:
        options.update(depth=a.depth, exit=a.exit, threshold=a.threshold, warm_start=a.warm_start,
                       kv_budget=a.kv_budget)
    elif a.depth or a.exit or a.warm_start or a.kv_budget:
        raise RecurError("--depth, --exit, --warm-start and --kv-budget apply to recurrent-depth models")
    t0, count, depth = time.perf_counter(), 0, 0
    sys.stdout.write(a.prompt)
    for piece, used in model.generate(a.prompt, a.max_new_tokens, a.tokenizer, **options):
        sys.stdout.write(piece)
        sys.stdout.flush()
        count, depth = count + 1, depth + used
    dt = time.perf_counter() - t0
    print(f"\nrecur: {count} tokens in {dt:.2f} s ({count / max(dt, 1e-9):.1f} tokens/s), mean depth "
          f"{depth / max(count, 1):.2f} per token ({model.describe()})", file=sys.stderr)


def _model_and_split(a):
    """The model at a.path and the split it is evaluated on (a.data, default: the dataset it was trained on,
    found wherever the run and the data are now)."""
    from .data import Dataset, find

    model = _load(a.path, a)
    if a.data:
        data_dir = Path(a.data)
    elif model.meta.get("dataset"):
        data_dir = find(model.meta["dataset"], model.run_dir)
    else:
        raise RecurError(f"{a.path} does not say which dataset it was trained on; pass --data DIR")
    data = Dataset(data_dir)
    data.check_model(model.info)
    split = data.splits.get(a.split)
    if split is None:
        raise RecurError(f"dataset {data_dir} has no split '{a.split}' (it has {', '.join(data.splits)})")
    return model, split, data_dir


def cmd_profile(a) -> None:
    from . import profile
    from .lock import RunLock

    _check_counts(a)
    model, split, data_dir = _model_and_split(a)
    out = Path(a.out) if a.out else model.run_dir
    # writing into a run: not while another process (training) writes into it
    lock = RunLock(out, "profile") if (out / "config.json").is_file() else None
    if lock is not None:
        lock.acquire()
    try:
        res = profile.profile(model.module, split, a.steps or model.n_sup, a.batch_size, model.device,
                              model.cfg.recursion.feedback, a.limit)
        path, png = profile.write(res, out)
    except OSError as e:
        raise RecurError(f"cannot write the profile to {out}: {e.strerror} (pass --out DIR)") from None
    finally:
        if lock is not None:
            lock.release()
    print(f"model {model.describe()}\non {data_dir}/{a.split}: {res['examples']} examples, "
          f"{res['net_calls_per_step']} net calls per supervision step\n")
    print(profile.table(res))
    print("\n" + profile.verdict(res))
    print(f"\nprofile: {path}" + (f"\nplot:    {png}" if png else ""))


def cmd_solve(a) -> None:
    from .evaluate import show

    _check_counts(a)
    if a.model:
        model = _load(a.model, a)
        chosen = f"the model {model.source}"
    else:
        name = _shipped_for(a.puzzle)
        model = _load(name, a)
        chosen = f"the shipped model {name}; --model picks another"
    src = Path(a.puzzle)
    if len(a.puzzle) < 4096 and src.is_file():  # longer is no path any system takes, but may be a big puzzle
        found = [(f"{src} line {line}", text) for line, text in model.task.read_puzzles(src, model.info)]
    elif os.sep in a.puzzle or "/" in a.puzzle or src.suffix in (".txt", ".csv"):
        raise RecurError(f"puzzle file {a.puzzle} does not exist")
    else:
        found = [("the puzzle", a.puzzle)]
    if not found:
        raise RecurError(f"{a.puzzle} holds no puzzles")
    rows = []
    for where, text in found:
        try:
            rows.append(model.task.parse(text, model.info))
        except RecurError as e:
            raise RecurError(f"{where}: {e} (for {chosen})") from None
    inputs = np.stack(rows)
    pred = model.predict(inputs, steps=a.steps, halt=a.halt, threshold=a.threshold)
    print(f"model {model.describe()}" + ("" if a.model else f" ({chosen})") + "\n")
    for i in range(len(found)):
        if len(found) > 1:
            print(f"# puzzle {i + 1}")
        if a.show_steps:
            from .report.steps import show_steps, use_color

            used = int(pred.steps[i])
            halt = None if model.cfg.recursion.act == "off" else pred.halt_score[:used, i].sigmoid().numpy()
            print(show_steps(model.task.name, model.info, inputs[i], pred.per_step[:used, i].numpy(), halt,
                             use_color(sys.stdout)) + "\n")
        print(show(model.task, model.info, inputs[i], pred.tokens[i].numpy(), int(pred.steps[i]), None,
                   sys.stdout.isatty() and not os.environ.get("NO_COLOR")) + "\n")


def cmd_report(a) -> None:
    from .report import build

    runs, data, out = a.runs, a.data, a.out
    if a.demo:
        if runs:
            raise RecurError("--demo reports a shipped model; give no RUN with it")
        runs, data, out = _demo(a.demo), data or _demo_data(a.demo), out or f"{a.demo}-demo.html"
    elif not runs:
        raise RecurError("give at least one RUN (or --demo)")
    out, report = build(runs, out, a.sample, a.examples, a.device, data)
    for run in report["runs"]:
        s = run["sample"]
        print(f"{run['name']}: " + (f"{s['size']} of {s['measured']} measured test puzzles traced" if s else
                                    "no puzzles traced") + "".join(f"\n  note: {n}" for n in run["notes"]))
    print(f"report: {out} ({out.stat().st_size / 1e3:.0f} kB, {report['seconds']:.1f} s)")


def _demo(name: str) -> list:
    from . import pretrained

    return [pretrained.path(name)]


def _demo_data(name: str):
    """The shipped model's test set, generated again from the settings in its header (once, under ./data)."""
    from .checkpoint import read_model
    from .config import RunConfig, from_dict
    from .data import prepare

    cfg = from_dict(RunConfig, read_model(name)[1]["config"])
    print(f"{name}: its generated test set under ./data (built once; recur prepare reads the same settings)")
    return prepare(cfg.data)


def _shipped_for(puzzle: str) -> str:
    """The shipped model for a Sudoku puzzle string or file without --model: the one of its size."""
    from . import pretrained
    from .tasks.sudoku import Sudoku

    text = puzzle
    if len(puzzle) < 4096 and Path(puzzle).is_file():  # the file's first puzzle, read as a Sudoku file
        found = Sudoku().read_puzzles(Path(puzzle), {})
        text = found[0][1] if found else ""
    cells = sum(not c.isspace() for c in text)
    name = pretrained.for_cells(cells)
    if name is None:
        sizes = ", ".join(f"{n} ({c} cells)" for c, n in pretrained.CELLS.items())
        raise RecurError(f"no model given, and no shipped model solves puzzles of {cells} cells (shipped Sudoku "
                         f"models: {sizes}); pass --model RUN")
    return name


def cmd_prepare(a) -> None:
    from .config import RunConfig, from_dict
    from .data import prepare
    from .train import run_record

    if a.run:
        if a.preset or a.overrides:
            raise RecurError("--run rebuilds the dataset a run was trained on from its own settings; give no "
                             "preset or key=value settings with it")
        cfg = from_dict(RunConfig, run_record(Path(a.run))["config"])
    else:
        cfg = load_config(a.preset or DEFAULT_PRESET, a.overrides)
    path = prepare(cfg.data, a.out)
    meta = json.loads((path / "metadata.json").read_text())
    sizes = ", ".join(f"{k}: {v['examples']} examples in {v['groups']} groups" for k, v in meta["splits"].items())
    print(f"{path}: {meta['task']} {sizes}")


def cmd_score(a) -> None:
    from .tasks.arc.score import score_submission

    res = score_submission(a.submission, a.solutions)
    if a.json:
        print(json.dumps(res))
        return
    print(f"score {res['score']:.4f} (ARC Prize rule: per test input, either attempt; mean over "
          f"{res['tasks']} tasks); {res['solved_inputs']} of {res['test_inputs']} test inputs solved")


def cmd_export(a) -> None:
    from .checkpoint import export

    source, out = export(a.src, a.out, a.force)
    print(f"wrote {out} from {source}")


def cmd_presets(a) -> None:
    from .compare import list_comparisons

    presets, comparisons = list_presets(), list_comparisons()
    width = max(map(len, [*presets, *comparisons]))
    for name, desc in presets.items():
        print(f"{name.ljust(width)}  {desc}{'  (default)' if name == DEFAULT_PRESET else ''}")
    print("\ncomparisons (recur compare NAME):")
    for name, desc in comparisons.items():
        print(f"{name.ljust(width)}  {desc}")


def cmd_compare(a) -> None:
    from .compare import run

    run(a.spec, a.overrides, a.out)


def cmd_keys(a) -> None:
    for key, default, doc in describe():
        print(f"{key} = {default}\n    {doc}")


def cmd_convert(a) -> None:
    from .interop import convert

    out, notes = convert(a.kind, Path(a.src), Path(a.dst), a.overrides, seq_len=a.seq_len, task=a.task)
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {out}")


def _runtime_args(p: argparse.ArgumentParser) -> None:
    """Where, in which dtype, and whether compiled a trained model runs."""
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=PRECISIONS, help="compute dtype (default: the run's train.precision)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the net: tens of seconds of warm-up that pay off for thousands of puzzles on a GPU")


class Parser(argparse.ArgumentParser):
    """argparse with recur's one-line errors (argparse prints its usage block first)."""

    def error(self, message: str):
        print(f"recur: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="recur", description="Recursive reasoning models: train, evaluate, solve.")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train a model (no arguments: the CPU quickstart)")
    t.add_argument("preset", nargs="?", help=f"preset name or TOML file (default: {DEFAULT_PRESET})")
    t.add_argument("overrides", nargs="*", help="dotted key=value settings, e.g. model.hidden=128 (see `recur keys`)")
    t.add_argument("--resume", metavar="RUN", help="continue this run directory from its latest checkpoint")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("eval", help="evaluate a run or checkpoint on its held-out data")
    e.add_argument("path", help="run directory, checkpoint directory or model.safetensors")
    e.add_argument("--data", help="prepared dataset directory (default: the one it was trained on)")
    e.add_argument("--split", default="test")
    e.add_argument("--halt", choices=["none", "adaptive"], default="none")
    e.add_argument("--steps", type=int, default=0, help="supervision steps (default: the model's N_sup)")
    e.add_argument("--limit", type=int, default=0, help="evaluate at most this many examples")
    e.add_argument("--batch-size", type=int, default=256)
    _runtime_args(e)
    e.add_argument("--guidance", type=float, default=1.0, help="guided decoding w (1 = plain; see recur.inference)")
    e.add_argument("--threshold", type=float, help="adaptive halting: halt once the score is > this (default: the "
                   "model's eval.halt_threshold); language models: the exit criterion's threshold (default: the reference's)")
    e.add_argument("--depth", help="language models (recurrent family): comma-separated test-time depths, e.g. 1,2,4,8")
    e.add_argument("--exit", choices=["none", "kl", "latent", "entropy", "argmax", "router"],
                   help="language models (recurrent family): per-token adaptive exit criterion")
    e.add_argument("--samples", type=int, default=1, help="noisy trajectories per puzzle, best by the halting head")
    e.add_argument("--noise", type=float, default=0.1, help="std of the latent noise with --samples > 1")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.add_argument("--submission", help="ARC: also write the voted answers as a Kaggle submission JSON here")
    e.set_defaults(fn=cmd_eval)

    f = sub.add_parser("profile", help="which recursion steps of a trained model improve its answer (dead compute)")
    f.add_argument("path", help="run directory, checkpoint directory or model.safetensors")
    f.add_argument("--data", help="prepared dataset directory of the task (default: the one it was trained on)")
    f.add_argument("--split", default="test")
    f.add_argument("--steps", type=int, default=0, help="supervision steps (default: the model's N_sup)")
    f.add_argument("--limit", type=int, default=1000, help="profile at most this many examples (0 = all)")
    f.add_argument("--batch-size", type=int, default=256)
    _runtime_args(f)
    f.add_argument("--out", help="where profile.json and plots/profile.png go (default: the model's run directory)")
    f.set_defaults(fn=cmd_profile)

    g = sub.add_parser("generate", help="continue a prompt with a trained language model, token by token")
    g.add_argument("path", help="run directory, checkpoint directory or model.safetensors of a language model")
    g.add_argument("prompt", help="the text to continue")
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = all)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--depth", type=int, help="recurrent family: core iterations per token (default model.lm.mean_depth)")
    g.add_argument("--exit", choices=["none", "kl", "latent", "entropy", "argmax", "router"],
                   help="recurrent family: per-token adaptive exit (default model.lm.exit)")
    g.add_argument("--threshold", type=float, help="the exit criterion's threshold (default: the reference's)")
    g.add_argument("--warm-start", action="store_true", help="start each token's recurrence from the previous one's")
    g.add_argument("--kv-budget", type=int, default=0, help="recurrent family: KV slots per core layer (0 = exact)")
    g.add_argument("--tokenizer", help="the tokenizers JSON file the model was trained with (byte models need none)")
    _runtime_args(g)
    g.set_defaults(fn=cmd_generate)

    s = sub.add_parser("solve", help="solve a puzzle given as text, or every puzzle in a file")
    s.add_argument("puzzle", help="a puzzle string (e.g. 81 characters, . or 0 for blanks) or a file of them")
    s.add_argument("--model", help="run directory, checkpoint or shipped model name (default: the shipped Sudoku model "
                   "of the puzzle's size)")
    s.add_argument("--steps", type=int, default=None, help="supervision steps (default: the model's N_sup)")
    s.add_argument("--halt", choices=["none", "adaptive"], default="adaptive")
    s.add_argument("--threshold", type=float, help="adaptive halting: halt once the score is > this (default: the "
                   "model's eval.halt_threshold; 4 for the shipped models, calibrated on fresh puzzles)")
    s.add_argument("--show-steps", action="store_true",
                   help="print the answer after each supervision step, changed cells in [brackets]")
    _runtime_args(s)
    s.set_defaults(fn=cmd_solve)

    g = sub.add_parser("report", help="one self-contained HTML page: curves, costs, and a step-through viewer")
    g.add_argument("runs", nargs="*", metavar="RUN",
                   help="run directories, comparison directories (recur compare) or checkpoints, side by side")
    g.add_argument("--demo", nargs="?", const="sudoku9", choices=["sudoku6", "sudoku9"],
                   help="a model that ships with recur thinking (default sudoku9), on its own generated test set")
    g.add_argument("--out", help="the HTML file (default: RUN/report.html; ./report.html for several)")
    g.add_argument("--sample", type=int, help="puzzles per run kept for the step-through viewer (default 24)")
    g.add_argument("--examples", type=int, help="test examples the recursion is measured on, per run (default 256)")
    g.add_argument("--data", help="prepared dataset directory (default: the one each run was trained on)")
    g.add_argument("--device", default="auto")
    g.set_defaults(fn=cmd_report)

    ad = sub.add_parser("adapt", help="fine-tune a trained model on new tasks' demonstrations, then evaluate them")
    ad.add_argument("model", help="run directory, checkpoint directory or model.safetensors to start from")
    ad.add_argument("overrides", nargs="*", help="the new tasks' data.* settings and the budget (train.steps, "
                    "train.time_limit, train.freeze=true for embeddings only)")
    ad.set_defaults(fn=cmd_adapt)

    r = sub.add_parser("prepare", help="build a preset's dataset on disk")
    r.add_argument("preset", nargs="?")
    r.add_argument("overrides", nargs="*")
    r.add_argument("--out", help="output directory (default: data/<task>-<hash of the settings>)")
    r.add_argument("--run", help="rebuild the dataset this run was trained on (from its saved settings)")
    r.set_defaults(fn=cmd_prepare)

    sc = sub.add_parser("score", help="score an ARC submission JSON against a solutions JSON (the ARC Prize rule)")
    sc.add_argument("submission", help="Kaggle-format submission: {task_id: [{attempt_1, attempt_2}, ...]}")
    sc.add_argument("solutions", help="the *_solutions.json of the same tasks")
    sc.add_argument("--json", action="store_true")
    sc.set_defaults(fn=cmd_score)

    x = sub.add_parser("export", help="write a run's model as one file to share: no training state, no paths")
    x.add_argument("src", help="run directory, checkpoint directory or model.safetensors")
    x.add_argument("out", help="the model file to write")
    x.add_argument("--force", action="store_true", help="replace `out` if it exists")
    x.set_defaults(fn=cmd_export)

    sub.add_parser("presets", help="list the presets and comparisons").set_defaults(fn=cmd_presets)

    m = sub.add_parser("compare", help="train several configurations under one budget and compare them")
    m.add_argument("spec", help="a shipped comparison (see `recur presets`) or a comparison TOML file")
    m.add_argument("overrides", nargs="*", help="key=value settings applied to every arm")
    m.add_argument("--out", default="runs", help="parent directory of the comparison directory")
    m.set_defaults(fn=cmd_compare)
    sub.add_parser("keys", help="list every config key with its default and meaning").set_defaults(fn=cmd_keys)

    c = sub.add_parser("convert", help="convert a reference TRM or HRM checkpoint into a recur checkpoint")
    c.add_argument("--from", dest="kind", choices=["trm-reference", "hrm-reference"], required=True)
    c.add_argument("src", help="the reference state-dict file (all_config.yaml beside it is read when present)")
    c.add_argument("dst", help="output checkpoint directory")
    c.add_argument("overrides", nargs="*", help="optional model.* settings that override or supply the architecture")
    c.add_argument("--seq-len", type=int, help="puzzle length without prefix (read from the data when absent)")
    c.add_argument("--task", default="sudoku", help="task the model solves (default: sudoku)")
    c.set_defaults(fn=cmd_convert)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    try:
        args, extra = p.parse_known_args(argv)
        # key=value settings may follow options (`recur train micro --resume R train.steps=60`): argparse leaves them
        settings = [x for x in extra if "=" in x and not x.startswith("-")]
        if extra != settings or (settings and not hasattr(args, "overrides")):
            p.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # --help, or Parser.error's one line
        return int(e.code or 0)
    if settings:
        args.overrides = list(args.overrides) + settings
    if getattr(args, "preset", None) and "=" in args.preset:  # `recur train a.b=c`: no preset given
        args.overrides, args.preset = [args.preset] + args.overrides, None
    try:
        args.fn(args)
    except RecurError as e:
        print(f"recur: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`recur keys | head`): stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # the machine said no (disk full, read-only, ...) somewhere not wrapped above
        where = f"{str(e.filename)[:200]}: " if e.filename else ""
        print(f"recur: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("recur: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
