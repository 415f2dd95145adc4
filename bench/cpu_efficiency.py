"""How much of the CPU's matmul speed recur's training step and inference use, measured in one process.

For each preset: a short training run through the real trainer (its steps/s exclude evaluation and
checkpoints), the matmul FLOPs of one optimizer step counted from the model's shape (recur's own cost
accounting), and so the FLOP rate of the step; then inference over `--puzzles` held-out puzzles (all
N_sup steps, as `recur solve --halt none`). Both against the rate of one large matmul (2048^3) in
the same process, dtype and thread count: the share of the hardware the step reaches.

    python bench/cpu_efficiency.py                      # the CPU presets, float32
    python bench/cpu_efficiency.py --precision auto     # bfloat16 on CPUs that have it
    MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python bench/cpu_efficiency.py   # AVX2 kernels only
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recur.config import load_config
from recur.data import Dataset
from recur.dist import pick_dtype
from recur.inference import infer
from recur.runlog import read_metrics
from recur.train import Trainer

PUZZLE_PRESETS = ["quickstart", "nqueens-cpu", "sorting-cpu", "dis-sudoku6-cpu"]
LM_PRESETS = ["lm-cpu", "looped-cpu"]


def matmul_rate(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
        flags = next((line for line in out.splitlines() if line.startswith("Flags")), "")
        isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
        return f"{name} ({isa}{', AVX512-BF16' if 'avx512_bf16' in flags else ''})"
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def bench(preset: str, a, root: Path) -> dict:
    cfg = load_config(preset, [f"train.steps={a.steps}", "train.eval_every=0", "train.ckpt_every=0",
                               f"train.log_every={a.steps // 2}", "train.progress=false", "eval.show=0",
                               f"train.precision={a.precision}", f"train.threads={a.threads}",
                               f"train.out_dir={root}", f"train.run_name={preset}", f"data.dir={root / preset}-data"])
    trainer = Trainer(cfg, root / preset, say=lambda m: None)
    trainer.fit()
    rate = [r for r in read_metrics(root / preset) if r["kind"] == "train"][-1]["steps_per_s"]  # warmed up
    model, B = trainer.model, cfg.train.batch_size
    if cfg.model.arch == "lm":
        tokens = B * trainer.data.info["seq_len"]
        step_flops = model.flops_per_token(training=True) * tokens
        return {"preset": preset, "steps_per_s": rate, "gflop_per_step": step_flops / 1e9,
                "gflops": step_flops * rate / 1e9, "tokens_per_s": tokens * rate}
    step_flops = model.step_flops(True) * B
    out = {"preset": preset, "steps_per_s": rate, "gflop_per_step": step_flops / 1e9, "gflops": step_flops * rate / 1e9}
    split = Dataset(trainer.data.path).splits["test"]
    idx = np.arange(a.puzzles) % len(split)
    b = split.batch(idx)
    x, ids = torch.from_numpy(b["inputs"]), torch.from_numpy(b["puzzle_ids"])
    net, n_sup = trainer.eval_model.eval(), cfg.recursion.n_sup
    with torch.inference_mode():
        infer(net, x[:256], ids[:256], n_sup)  # warm-up
        t = time.perf_counter()
        for lo in range(0, len(x), 256):
            infer(net, x[lo:lo + 256], ids[lo:lo + 256], n_sup)
        dt = time.perf_counter() - t
    out.update(infer_puzzles_per_s=len(x) / dt, infer_gflops=len(x) * n_sup * net.step_flops(False) / dt / 1e9)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("presets", nargs="*", default=PUZZLE_PRESETS + LM_PRESETS)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--puzzles", type=int, default=5000)
    p.add_argument("--precision", default="float32", choices=["float32", "auto", "bfloat16"])
    p.add_argument("--threads", type=int, default=0, help="train.threads (0 = auto)")
    p.add_argument("--out", help="also write the results as JSON here")
    a = p.parse_args()
    dtype = pick_dtype(a.precision, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench(name, a, Path(tmp)) for name in a.presets]
    peak = matmul_rate(dtype) / 1e9
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, {str(dtype).removeprefix('torch.')}, torch "
          f"{torch.__version__}; one 2048^3 matmul: {peak:.1f} GFLOP/s\n")
    print("| preset | steps/s | GFLOP/step | step GFLOP/s | share of the matmul rate | inference puzzles/s | "
          "inference share |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        inf = (f"{r['infer_puzzles_per_s']:.0f} | {r['infer_gflops'] / peak:.0%}" if "infer_gflops" in r
               else f"{r['tokens_per_s']:.0f} tokens/s (training) | -")
        print(f"| {r['preset']} | {r['steps_per_s']:.2f} | {r['gflop_per_step']:.2f} | {r['gflops']:.1f} | "
              f"{r['gflops'] / peak:.0%} | {inf} |")
    if a.out:
        Path(a.out).write_text(json.dumps({"cpu": cpu_name(), "matmul_gflops": peak, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
