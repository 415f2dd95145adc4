"""recur: recursive reasoning models (TRM, ...) in PyTorch.

    import recur
    model = recur.load("runs/quickstart-...")          # a run directory or checkpoint
    pred = model.predict(inputs, halt="adaptive")       # tokens, logits, steps, per-step answers
    recur.Trainer(recur.load_config("quickstart", ["train.steps=100"]), "runs/mine").fit()
"""

__version__ = "0.1.0"


def load(path, device: str = "auto", precision: str | None = None, compile: bool = False):
    """Load a trained model (a recur.api.Recur, or a recur.api.RecurLM for a language model) from a run directory,
    checkpoint directory or model.safetensors file
    (`precision`: auto, float32 or bfloat16 in place of the run's train.precision; `compile`:
    torch.compile the net, worth its warm-up for thousands of puzzles)."""
    from .api import load as load_model

    return load_model(path, device, precision, compile)


def __getattr__(name: str):
    # imported on first use, so that `import recur` stays light (the trainer pulls in torch and the tasks)
    if name == "Trainer":
        from .train import Trainer

        return Trainer
    if name == "load_config":
        from .config import load_config

        return load_config
    raise AttributeError(f"module 'recur' has no attribute {name!r}")
