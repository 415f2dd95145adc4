"""Inference throughput of a trained model: the reference protocol against adaptive halting with
continuous batching, on the same checkpoint and the same puzzles.

  all-steps   batches of B puzzles, every puzzle runs all N_sup supervision steps (the reference)
  adaptive, per batch
              batches of B puzzles; a puzzle stops when its halting head fires, the batch runs
              until its last puzzle stops (recur.inference.infer per batch, halt="adaptive")
  adaptive, continuous batching
              a puzzle leaves when its halting head fires (or at N_sup) and the next one
              takes its slot (recur.inference.infer over all puzzles, batch_size=B)

The held-out puzzles are repeated to `--puzzles` so the batch stays full for most of the run.
Prints puzzles/s, exact accuracy, mean supervision steps and net calls per puzzle for each, and for
continuous batching the fraction of puzzles answered as the per-batch path answers them.

    python bench/inference.py RUN_OR_CKPT [--batch 768] [--puzzles 8192] [--compile] [--thresholds 0,1,2] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import recur
from recur.config import PRECISIONS
from recur.data import Dataset
from recur.data import find
from recur.inference import infer
from recur.losses import IGNORE


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path")
    p.add_argument("--batch", type=int, default=768)
    p.add_argument("--puzzles", type=int, default=8192)
    p.add_argument("--compile", action="store_true", help="torch.compile the model (both paths)")
    p.add_argument("--reps", type=int, default=1, help="timed runs per path; the median is reported")
    p.add_argument("--thresholds", default="0", help="comma-separated halting thresholds for the adaptive path")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=PRECISIONS, help="default: the run's train.precision")
    p.add_argument("--out", help="also write the results as JSON here")
    a = p.parse_args()
    model = recur.load(a.path, a.device, a.precision)
    split = Dataset(find(model.meta["dataset"], model.run_dir)).splits["test"]
    reps = -(-a.puzzles // len(split))
    b = split.batch(np.tile(np.arange(len(split)), reps)[:a.puzzles])
    dev = model.device
    x, ids, y = (torch.from_numpy(b[k]).to(dev) for k in ("inputs", "puzzle_ids", "labels"))
    net = torch.compile(model.module) if a.compile else model.module
    rec = model.cfg.recursion
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def all_steps():
        return [infer(net, x[i:i + a.batch], ids[i:i + a.batch], rec.n_sup, "none", rec.act, rec.feedback)
                for i in range(0, len(x), a.batch)]

    def per_batch(threshold):
        return lambda: [infer(net, x[i:i + a.batch], ids[i:i + a.batch], rec.n_sup, "adaptive", rec.act,
                              rec.feedback, threshold=threshold) for i in range(0, len(x), a.batch)]

    def adaptive(threshold):
        return lambda: [infer(net, x, ids, rec.n_sup, "adaptive", rec.act, rec.feedback, 1.0, threshold, a.batch)]

    rows = []
    paths = [("all-steps", all_steps)]
    for t in a.thresholds.split(","):
        paths += [(f"adaptive, per batch (score > {t})", per_batch(float(t))),
                  (f"adaptive, continuous batching (score > {t})", adaptive(float(t)))]
    per_batch_tokens = None  # the per-batch answers at the same threshold, to check continuous batching against
    for name, fn in paths:
        fn()  # warm-up (and compilation)
        times = []
        for _ in range(a.reps):
            sync()
            t = time.perf_counter()
            parts = fn()
            sync()
            times.append(time.perf_counter() - t)
        dt = sorted(times)[len(times) // 2]  # the median run
        tokens = torch.cat([r.tokens for r in parts])
        steps = torch.cat([r.steps for r in parts]).float()
        valid = y != IGNORE
        exact = ((tokens == y) | ~valid).all(-1).float().mean().item()
        rows.append({"path": name, "puzzles": len(x), "batch": a.batch, "seconds": round(dt, 3),
                     "puzzles_per_s": round(len(x) / dt, 1), "exact": round(exact, 4),
                     "mean_steps": round(steps.mean().item(), 2),
                     "net_calls_per_puzzle": round(steps.mean().item() * model.module.net_calls, 1)})
        if "per batch" in name:
            per_batch_tokens = tokens
        elif "continuous" in name:  # same answers as the per-batch path (bf16 may differ in a last bit)
            rows[-1]["same_answers_as_per_batch"] = round((tokens == per_batch_tokens).all(-1).float().mean().item(), 4)
        print(json.dumps(rows[-1]), flush=True)
    card = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    dtype = str(model.module.dtype).removeprefix("torch.")
    print(f"\n{card}, {dtype}, {a.path}, compile={a.compile}\n\n| path | puzzles/s | exact | mean steps | net calls/puzzle |"
          "\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['puzzles_per_s']} | {r['exact']} | {r['mean_steps']} | {r['net_calls_per_puzzle']} |")
    for r in rows[1:]:
        print(f"{r['path']}: {r['puzzles_per_s'] / rows[0]['puzzles_per_s']:.2f}x the puzzles/s of all-steps, "
              f"exact {r['exact'] - rows[0]['exact']:+.4f}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"card": card, "dtype": dtype, "path": a.path, "compile": a.compile, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
