"""Plots of a run, drawn from its metrics.jsonl (matplotlib is an optional extra: recur[plot])."""

from __future__ import annotations

from pathlib import Path

from .runlog import read_metrics


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def subplots(n: int, width: float = 6.0):
    """A headless figure with n panels side by side (call only when have_matplotlib())."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, n, figsize=(width * n, 4))


def save(fig, ax, out: Path, legend: bool = True) -> Path:
    """Grid (and legend) on every panel, then write the figure to `out` and free it."""
    import matplotlib.pyplot as plt

    for a in ax:
        a.grid(alpha=0.3)
        if legend:
            a.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def training_plot(run_dir: Path) -> Path | None:
    """<run>/plots/training.png: loss and accuracy over training, and (puzzles) the test accuracy after each
    supervision step or (language models) the validation NLL over training.

    Returns None when matplotlib is not installed.
    """
    if not have_matplotlib():
        return None
    records = read_metrics(run_dir)
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig, ax = subplots(3, 5.0)
    if train:
        ax[0].plot([r["step"] for r in train], [r["loss"] for r in train])
        ax[0].set_yscale("log")
        ax[1].plot([r["step"] for r in train], [r["exact_accuracy"] for r in train], label="train exact")
        ax[1].plot([r["step"] for r in train], [r["accuracy"] for r in train], label="train token", alpha=0.6)
    ax[0].set(title="training loss", xlabel="optimizer step")
    if evals:
        ax[1].plot([r["step"] for r in evals], [r["exact_accuracy"] for r in evals], "o-", label="test exact")
        last = evals[-1]
        if "exact_per_step" in last:  # puzzles: where the recursion stops paying
            steps = range(1, len(last["exact_per_step"]) + 1)
            ax[2].plot(steps, last["exact_per_step"], "o-", label="exact")
            ax[2].plot(steps, last["token_per_step"], "s--", label="token")
            ax[2].set(title=f"test accuracy per supervision step (step {last['step']})", xlabel="supervision step",
                      ylim=(0, 1.02))
        else:
            ax[2].plot([r["step"] for r in train], [r["nll"] for r in train], label="train NLL", alpha=0.6)
            ax[2].plot([r["step"] for r in evals], [r["nll"] for r in evals], "o-", label="validation NLL")
            ax[2].set(title="next-token NLL per token (nats)", xlabel="optimizer step")
        ax[2].legend()
    ax[1].set(title="accuracy", xlabel="optimizer step", ylim=(0, 1.02))
    ax[1].legend()
    return save(fig, ax, Path(run_dir) / "plots" / "training.png", legend=False)
