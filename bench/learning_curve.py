"""recur's learning curve in the format of the reference anchor (docs/benchmarks.md).

Trains the `sudoku34-anchor` preset (TRM-MLP, D=256, batch 384, lr 3e-4, warm-up 300, weight
decay 1.0, EMA 0.999, evaluation over all 16 supervision steps on every test puzzle) on the
given CSV files and prints, at every evaluation, the step, the training seconds (evaluation
excluded), exact and token accuracy.

    python bench/learning_curve.py TRAIN.csv TEST.csv [key=value ...] [--out curve.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from recur.config import load_config
from recur.runlog import read_metrics
from recur.train import Trainer, new_run_dir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("train_csv")
    p.add_argument("test_csv")
    p.add_argument("overrides", nargs="*", help="extra key=value settings, e.g. train.steps=1000")
    p.add_argument("--out", help="write the curve as JSON here")
    a = p.parse_args()
    cfg = load_config("sudoku34-anchor", [f"data.sudoku.train_csv={a.train_csv}", f"data.sudoku.test_csv={a.test_csv}",
                                          "data.sudoku.test_size=0", "eval.show=0", *a.overrides])
    run = new_run_dir(cfg, "sudoku34-anchor")
    t0 = time.time()
    Trainer(cfg, run).fit()
    curve = [{k: r[k] for k in ("step", "train_s", "exact_accuracy", "token_accuracy")}
             for r in read_metrics(run) if r["kind"] == "eval"]
    print("\n| step | train s | exact | token acc |\n|---|---|---|---|")
    for c in curve:
        print(f"| {c['step']} | {c['train_s']:.1f} | {c['exact_accuracy']:.3f} | {c['token_accuracy']:.3f} |")
    if a.out:
        card = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        with open(a.out, "w") as f:
            json.dump({"card": card, "torch": torch.__version__, "run": str(run), "overrides": a.overrides,
                       "wall_s": round(time.time() - t0, 1), "curve": curve}, f, indent=1)


if __name__ == "__main__":
    main()
