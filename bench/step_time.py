"""Training step time and inference throughput of recur's TRM at the reference shapes.

A training step is what the Trainer does per optimizer step: one supervision step of the
streaming schedule (T*(n+1) net calls, the last n+1 with gradients), the loss, backward,
AdamATan2, EMA, and the step's metrics copied to the host (as the reference does every step).
Inference runs a fresh batch through all 16 supervision steps (the reference protocol).
Tokens are random: the cost does not depend on their values.

After the compile warm-up, one process times these variants of the same step (same model,
same compiled graphs), so their ratios are free of compile noise:
  reference-like   stablemax in float64, the step's metrics copied to the host every step
  fp32-loss        stablemax in float32 (the loss difference on the same logits is printed)
  fp32-async       ... and no host copy inside the loop (the Trainer keeps metric sums on device)
  fp32-async-cl    ... and the loss compiled too (--compile-loss)
It also checks the fast paths against the plain ones on the same inputs: float32 against float64
stablemax (relative loss difference) and the compiled model against the eager one (logits).

    python bench/step_time.py                       # the three reference workloads (GPU)
    python bench/step_time.py --compile-mode reduce-overhead   # the same under CUDA graphs
    python bench/step_time.py --sdpa cudnn          # attention restricted to one SDPA kernel
    python bench/step_time.py --batch 16 --steps 5  # a quick CPU run at a smaller batch

Workloads (anchors.md): sudoku_mlp (TRM-MLP, B=768), sudoku_att (TRM-Att, RoPE, B=768), both seq
81 + 16 prefix, n=6; maze_att (seq 900 + 16, n=4, B=192). All D=512, 8 heads, 2 layers, T=3, N_sup=16.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from recur.config import load_config
from recur.dist import pick_device, pick_dtype
from recur.models import build_model
from recur.optim import EMA, build_optimizers, set_lr
from recur.inference import infer
from recur.losses import step_loss, token_ce
from recur.supervision import Carry, DeepSupervision

WORKLOADS = {  # name: (overrides, vocab, seq_len, batch)
    "sudoku_mlp": (["model.mixer=mlp_t", "model.pos=none"], 11, 81, 768),
    "sudoku_att": ([], 11, 81, 768),
    "maze_att": (["model.n=4"], 6, 900, 192),
}
SDPA = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense tensor-core peak, for MFU


def bench(name: str, args) -> dict:
    overrides, vocab, seq_len, batch = WORKLOADS[name]
    B = args.batch or batch
    cfg = load_config(None, overrides + [f"train.batch_size={B}"])
    device = pick_device(args.device)
    dtype = pick_dtype(args.precision, device)
    torch.manual_seed(0)
    model = build_model(cfg.model, {"vocab_size": vocab, "seq_len": seq_len, "num_puzzle_ids": 1}, dtype).to(device)
    opts = build_optimizers(model, cfg.optim)
    ema = EMA(model, cfg.optim.ema_rate)
    engine = DeepSupervision(cfg)
    compiled = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    step_model = torch.compile(model, mode=args.compile_mode) if compiled else model
    graphs = compiled and args.compile_mode == "reduce-overhead"  # CUDA graphs: one replay per step
    g = torch.Generator().manual_seed(0)
    batches = [{"inputs": torch.randint(1, vocab, (B, seq_len), generator=g, dtype=torch.int32).to(device),
                "labels": torch.randint(2, vocab, (B, seq_len), generator=g, dtype=torch.int32).to(device),
                "puzzle_ids": torch.zeros(B, dtype=torch.int32, device=device)} for _ in range(4)]
    carry = Carry.empty(model, batches[0]["inputs"], batches[0]["labels"])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def train_step(i, to_host: bool):
        nonlocal carry
        if graphs:  # the previous step's outputs (the carry) are inputs now, not held across replays
            torch.compiler.cudagraph_mark_step_begin()
        carry, loss, m = engine.advance(step_model, carry, batches[i % 4])
        (loss.total / B).backward()
        set_lr(opts, cfg.optim, i + 1, 10**6)
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        ema.update(model)
        stats = torch.stack([m[k] for k in sorted(m)])
        return stats.cpu() if to_host else stats

    def timed(n: int, to_host: bool) -> float:
        sync()
        t = time.perf_counter()
        for i in range(n):
            train_step(i, to_host)
        sync()
        return (time.perf_counter() - t) / n

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.train()
    warm = timed(args.warmup, True) * args.warmup
    variants = {"reference-like": ("float64", True, False), "fp32-loss": ("float32", True, False),
                "fp32-async": ("float32", False, False)}
    if args.compile_loss:
        variants["fp32-async-cl"] = ("float32", False, True)
    times = {}
    for name_v, (prec, to_host, compiled_loss) in variants.items():
        engine.cfg.loss_precision = prec
        try:
            if compiled_loss:
                engine.loss_fn = torch.compile(step_loss)
                timed(2, False)  # its compilation
            times[name_v] = round(timed(args.steps, to_host) * 1e3, 2)
        except Exception as e:  # a failing variant is reported, the others still count
            times[name_v] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
            engine.loss_fn = step_loss
    dt = times["reference-like"] / 1e3
    with torch.no_grad():  # float32 vs float64 stablemax on the same logits
        _, out = step_model(carry.state, carry.tokens, carry.puzzle_ids, carry.steps + 1)
        l64 = token_ce(out.logits, carry.labels, "stablemax", "float64").sum()
        l32 = token_ce(out.logits, carry.labels, "stablemax", "float32").sum()
        loss_rel_diff = abs((l32.double() - l64) / l64).item()
        _, eager = model(carry.state, carry.tokens, carry.puzzle_ids, carry.steps + 1)  # the plain path
        compiled_vs_eager = {"logits_max_abs_diff": (out.logits.float() - eager.logits.float()).abs().max().item(),
                             "argmax_agreement": (out.logits.argmax(-1) == eager.logits.argmax(-1)).float().mean().item()}
    model.eval()
    with torch.inference_mode():
        infer(step_model, batches[0]["inputs"], batches[0]["puzzle_ids"], cfg.recursion.n_sup)  # warm-up / compile
        sync()
        t = time.perf_counter()
        for r in range(args.infer_reps):
            infer(step_model, batches[1 + r % 3]["inputs"], batches[1 + r % 3]["puzzle_ids"], cfg.recursion.n_sup)
        sync()
        inf = (time.perf_counter() - t) / args.infer_reps
    flops = model.step_flops(training=True) * B
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in card), None)
    return {"workload": name, "device": card, "dtype": str(dtype).removeprefix("torch."),
            "compiled": args.compile_mode if compiled else False,
            "batch": B, "seq": seq_len + model.prefix_len, "n": cfg.model.n,
            "params": sum(p.numel() for n, p in model.named_parameters() if not n.startswith("puzzle_emb")),
            "warmup_s": round(warm, 1), "train_ms_per_step": round(dt * 1e3, 2), "variants_ms": times,
            "fp32_loss_rel_diff": loss_rel_diff, "compiled_vs_eager": compiled_vs_eager,
            "train_example_steps_per_s": round(B / dt), "tflop_per_step": round(flops / 1e12, 3),
            "mfu": round(flops / dt / peak, 3) if peak and dtype == torch.bfloat16 else None,
            "infer_ms_per_batch_16_steps": round(inf * 1e3, 1), "infer_puzzles_per_s": round(B / inf, 1),
            "peak_mem_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated: " + ", ".join(WORKLOADS))
    p.add_argument("--batch", type=int, default=0, help="override every workload's batch (0 = the reference's)")
    p.add_argument("--steps", type=int, default=30, help="timed training steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed first steps (compilation happens here)")
    p.add_argument("--infer-reps", type=int, default=3)
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--compile-mode", choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"],
                   default="default", help="torch.compile mode (reduce-overhead: CUDA graphs)")
    p.add_argument("--compile-loss", action="store_true", help="also time the step with the loss compiled")
    p.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto")
    p.add_argument("--sdpa", choices=["default", *SDPA], default="default",
                   help="restrict attention to one SDPA kernel (default: PyTorch's choice)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="also write the results as JSON here")
    args = p.parse_args()
    rows = []
    for name in args.workloads.split(","):
        if args.sdpa == "default":
            rows.append(bench(name, args))
        else:  # the kernel is chosen when the graph is traced, so the whole workload runs inside the context
            with sdpa_kernel(SDPA[args.sdpa]):
                rows.append(bench(name, args))
        rows[-1]["sdpa"] = args.sdpa
        print(json.dumps(rows[-1]), flush=True)
    cols = ["workload", "batch", "train_ms_per_step", "variants_ms", "train_example_steps_per_s", "mfu",
            "infer_puzzles_per_s", "peak_mem_gb", "warmup_s"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
