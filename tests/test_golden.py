"""Golden traces: the float32 losses and accuracies of short CPU runs, pinned in tests/fixtures/golden/.

The resume and data-parallel tests compare two runs of the same code, so a refactor that changes the
math changes both sides and passes; these traces were written by an earlier version and catch it.
Each arm covers one path of the engine (TRM halting, HRM Q-learning, DIS targets with feedback, the
per-batch schedule with a depth curriculum, the transformer baseline). Values are compared with a
tolerance that absorbs float32 reduction-order differences between CPUs (AVX2 / AVX-512), not a change
of formula.

Regenerate (only after a deliberate change of the math, saying why in the commit):
    python tests/test_golden.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from recur.config import load_config
from recur.runlog import read_metrics
from recur.train import Trainer

FIXTURE = Path(__file__).parent / "fixtures" / "golden" / "micro_traces.json"

ARMS = {
    "trm": [],
    "hrm": ["model.separate_nets=true", "model.grad=one_step", "recursion.act=q_learning", "optim.ema=false"],
    "dis": ["model.T=1", "model.step_embedding=4", "recursion.act=off", "recursion.targets=input_to_label",
            "recursion.feedback=prediction", "recursion.step_weights=linear"],
    "per_batch_curriculum": ["recursion.schedule=per_batch", "recursion.curriculum=0.5:1,1", "model.mixer=mlp_t",
                             "model.pos=none", "recursion.step_weights=decay"],
    "transformer": ["model.arch=transformer", "model.layers=2", "model.puzzle_emb_dim=8"],
}
TRAIN_KEYS = ("loss", "lm_loss", "halt_loss", "continue_loss", "accuracy", "exact_accuracy", "halt_accuracy",
              "mean_steps", "net_calls", "flops", "halted", "lr")
EVAL_KEYS = ("exact_accuracy", "token_accuracy", "exact_adaptive", "mean_steps_adaptive", "halt_accuracy",
             "exact_per_step", "token_per_step", "net_calls", "flops")


def trace(arm: str, root: Path) -> dict:
    """Train the micro preset (float32, 12 steps) with the arm's settings; its train and eval records."""
    cfg = load_config("micro", ARMS[arm] + [f"data.dir={root / 'data'}", "eval.show=0", "train.precision=float32",
                                            "train.threads=1", f"train.out_dir={root}", f"train.run_name={arm}"])
    Trainer(cfg, root / arm, say=lambda m: None).fit()
    records = read_metrics(root / arm)
    return {"train": [{k: r[k] for k in TRAIN_KEYS} | {"step": r["step"]} for r in records if r["kind"] == "train"],
            "eval": [{k: r[k] for k in EVAL_KEYS} | {"step": r["step"]} for r in records if r["kind"] == "eval"]}


def tolerance(key: str) -> dict:
    if key.endswith("loss"):  # float32 reduction order differs between CPUs by ~2e-7 here; a changed formula moves more
        return {"rel": 2e-5, "abs": 1e-7}
    if "accuracy" in key or "adaptive" in key or "per_step" in key or key == "mean_steps":
        return {"abs": 1.01 / 32}  # at most one puzzle in a 32-row batch or test set flips near a boundary
    return {"rel": 1e-6}  # counts, FLOPs, learning rates: exact


def close(got, want, key: str, where: str) -> None:
    if isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            close(g, w, key, f"{where}[{i}]")
    elif isinstance(want, dict):
        assert got.keys() == want.keys(), where
        for k in want:
            close(got[k], want[k], k, f"{where}.{k}")
    else:
        assert got == pytest.approx(want, **tolerance(key)), f"{where}: {got} != golden {want}"


@pytest.mark.parametrize("arm", list(ARMS))
def test_micro_run_matches_its_golden_trace(arm, tmp_path_factory):
    golden = json.loads(FIXTURE.read_text())
    close(trace(arm, tmp_path_factory.mktemp("golden")), golden[arm], "", arm)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        traces = {arm: trace(arm, Path(tmp)) for arm in ARMS}
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(traces, indent=1) + "\n")
    print(f"wrote {FIXTURE}", file=sys.stderr)
