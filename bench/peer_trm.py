"""recur's TRM training step against the `tiny-recursive-model` package's, at matched size and rows, side by side.

The package is a peer a user might pick instead of recur. It is never a dependency of recur: install it into a
virtual environment of its own and pass that environment's Python:

    python -m venv /tmp/peer && /tmp/peer/bin/pip install torch==2.13.0 tiny-recursive-model==0.0.15
    python bench/peer_trm.py --peer-python /tmp/peer/bin/python

Both train on the same random 6x6-Sudoku-shaped batches (36 cells, vocabulary 8, 128 rows): one supervision
step per optimizer step (T cycles of n latent updates and one answer update, backprop through the last cycle),
the carry detached between steps, AdamATan2 and an EMA of the weights, as each library trains. The peer runs its
MLP-mixer network (LayerNorm, GELU) over the same 37 positions (36 cells and one register token), matched to
recur's parameter count in two ways: at the width that matches with the package's default expansions, or at
recur's width 64 with the channel MLP's expansion that matches. The peer needs T >= 2. Timings
alternate between the two processes (recur, peer, recur, ...) so that a busy machine slows both alike; the
median over repetitions is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
import time

import torch

PEER = textwrap.dedent('''
    import json, sys, time, torch
    from adam_atan2_pytorch import AdamAtan2
    from ema_pytorch import EMA
    from tiny_recursive_model import TinyRecursiveModel, MLPMixer1D
    a = json.loads(sys.argv[1])
    torch.set_num_threads(a["threads"])
    torch.manual_seed(0)

    def build(dim, channel=0.5):
        net = MLPMixer1D(dim=dim, depth=a["layers"], seq_len=a["seq"], expansion_factor_token=channel)
        return TinyRecursiveModel(dim=dim, num_tokens=a["vocab"], network=net, num_refinement_blocks=a["T"],
                                  num_latent_refinements=a["n"], num_register_tokens=a["seq"] - a["cells"])

    def size(m):
        return sum(p.numel() for p in m.parameters())

    if a["match"] == "width":  # the width whose parameter count is closest to recur's (default expansions)
        dim, channel = min(range(16, 257, 4), key=lambda d: abs(size(build(d)) - a["params"])), 0.5
    else:  # recur's width; the channel MLP's expansion that matches recur's parameter count
        dim = a["dim"]
        channel = min((e / 8 for e in range(1, 129)), key=lambda e: abs(size(build(dim, e)) - a["params"]))
    model = build(dim, channel)
    opt, ema = AdamAtan2(model.parameters(), lr=1e-4), EMA(model, beta=0.99)
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, a["vocab"], (a["rows"], a["cells"]), generator=g) for _ in range(4)]
    labels = [torch.randint(0, a["vocab"], (a["rows"], a["cells"]), generator=g) for _ in range(4)]
    out, lat = model.get_initial()
    out, lat = out.expand(a["rows"], a["seq"], dim), lat.expand(a["rows"], a["seq"], dim)

    def step(i):
        global out, lat
        loss, _, out, lat, _, _ = model(seqs[i % 4], out, lat, labels=labels[i % 4])
        loss.backward(); opt.step(); opt.zero_grad(); ema.update()

    for i in range(a["warmup"]):
        step(i)
    t = time.perf_counter()
    for i in range(a["steps"]):
        step(i)
    print(json.dumps({"ms": (time.perf_counter() - t) / a["steps"] * 1e3, "dim": dim, "channel": channel,
                      "params": size(model)}))
''')


def recur_step_ms(a, overrides: list[str]) -> tuple[float, int]:
    from recur.config import load_config
    from recur.models import build_model
    from recur.optim import EMA, build_optimizers
    from recur.supervision import Carry, DeepSupervision

    torch.set_num_threads(a.threads)
    cfg = load_config("quickstart", ["train.precision=float32", f"train.batch_size={a.rows}"] + overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model, {"vocab_size": 8, "seq_len": 36, "num_puzzle_ids": 1})
    opts, ema, eng = build_optimizers(model, cfg.optim), EMA(model, 0.99), DeepSupervision(cfg)
    g = torch.Generator().manual_seed(0)
    batches = [{"inputs": torch.randint(1, 8, (a.rows, 36), generator=g, dtype=torch.int32),
                "labels": torch.randint(2, 8, (a.rows, 36), generator=g, dtype=torch.int32),
                "puzzle_ids": torch.zeros(a.rows, dtype=torch.int32)} for _ in range(4)]
    carry = Carry.empty(model, batches[0]["inputs"], batches[0]["labels"])

    def step(i):
        nonlocal carry
        carry, loss, _ = eng.advance(model, carry, batches[i % 4])
        (loss.total / a.rows).backward()
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        ema.update(model)

    for i in range(a.warmup):
        step(i)
    t = time.perf_counter()
    for i in range(a.steps):
        step(i)
    return (time.perf_counter() - t) / a.steps * 1e3, sum(p.numel() for p in model.parameters())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", required=True, help="the Python of a virtual environment with tiny-recursive-model")
    p.add_argument("--rows", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    arms = {  # name: recur's settings, the peer's recursion (it needs T >= 2), how the peer's size is matched
        "trm-cpu (T=2, n=2) vs the peer at its width": (["model.T=2", "model.n=2", "model.ffn_multiple=256"], 2, 2,
                                                        "width"),
        "trm-cpu (T=2, n=2) vs the peer at width 64": (["model.T=2", "model.n=2", "model.ffn_multiple=256"], 2, 2,
                                                       "channel"),
        "T=2, n=2, ffn_multiple=64 vs the peer at width 64": (["model.T=2", "model.n=2"], 2, 2, "channel"),
        "quickstart (T=1, n=1) vs the peer at width 64, T=2, n=1": ([], 2, 1, "channel"),
    }
    results = []
    for name, (overrides, T, n, match) in arms.items():
        ours, theirs = [], []
        for _ in range(a.reps):
            ms, params = recur_step_ms(a, overrides)
            ours.append(ms)
            args = {"rows": a.rows, "cells": 36, "seq": 37, "vocab": 8, "layers": 2, "T": T, "n": n, "params": params,
                    "threads": a.threads, "steps": a.steps, "warmup": a.warmup, "match": match, "dim": 64}
            done = subprocess.run([a.peer_python, "-c", PEER, json.dumps(args)], capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"the peer failed: {done.stderr.strip().splitlines()[-1]}")
            peer = json.loads(done.stdout)
            theirs.append(peer["ms"])
        r, q = statistics.median(ours), statistics.median(theirs)
        results.append((name, params, peer, r, q))
    print(f"{a.rows} rows per step, {a.threads} threads, float32, median of {a.reps} x {a.steps} steps\n")
    print("| arm | recur params | peer params (width, channel expansion) | recur ms/step | peer ms/step | recur speed-up |")
    print("|---|---|---|---|---|---|")
    for name, params, peer, r, q in results:
        print(f"| {name} | {params:,} | {peer['params']:,} ({peer['dim']}, {peer['channel']:g}) | {r:.1f} | {q:.1f} | "
              f"{q / r:.2f}x |")


if __name__ == "__main__":
    main()
