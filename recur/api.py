"""The Python API: a trained model that predicts (puzzles) or generates (language models).

    model = recur.load("runs/quickstart-20261126-101500")      # a Recur
    pred = model.predict(inputs, halt="adaptive")
    pred.tokens, pred.logits, pred.steps, pred.per_step
    lm = recur.load("runs/lm-cpu-20261202-101500")             # a RecurLM
    for piece, depth in lm.generate("def main(", 64): print(piece, end="")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import checkpoint
from .config import PRECISIONS, RunConfig, from_dict
from .dist import pick_device, pick_dtype
from .errors import RecurError
from .models import build_model
from .optim import SPARSE_PREFIX
from .inference import infer
from .tasks import REGISTRY


@dataclass
class Prediction:
    """Answers for a batch of puzzles (CPU tensors)."""

    tokens: torch.Tensor
    """[B, L] the answer at each sample's last supervision step."""
    logits: torch.Tensor
    """[B, L, V] float32 logits of that step."""
    steps: torch.Tensor
    """[B] supervision steps used per sample."""
    per_step: torch.Tensor
    """[S, B, L] the answer after every supervision step (frozen after a sample halts)."""
    halt_score: torch.Tensor
    """[S, B] the halting score after every supervision step (the sample halts when > 0)."""


def load(path: str | Path, device: str = "auto", precision: str | None = None, compile: bool = False):
    """A Recur (puzzle models) or a RecurLM (model.arch=lm) from a run directory, checkpoint directory or
    model.safetensors file. `precision` (auto, float32, bfloat16) overrides the run's train.precision; `compile`
    runs the net under torch.compile: the first batch waits for the compiler (tens of seconds), so it pays off for
    thousands of puzzles, not for a few."""
    notes: list[str] = []
    source = checkpoint.resolve(path, notes)
    weights, meta = checkpoint.read_model(source)
    try:
        cfg = from_dict(RunConfig, meta["config"])
        info, task = meta["info"], meta["task"]
    except KeyError as e:
        raise RecurError(f"{path}: checkpoint header lacks {e}") from None
    if task not in REGISTRY:
        raise RecurError(f"{path} was trained on task '{task}', which this recur does not know")
    dev = pick_device(device)
    if precision is not None and precision not in PRECISIONS:
        raise RecurError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    # the puzzle table becomes the loaded tensor itself, not a zero table of its size that it is copied into (an
    # ARC-AGI-1 table is 1.8 GB: held once, not twice)
    table = weights.get(SPARSE_PREFIX)
    fits = table is not None and tuple(table.shape) == (info.get("num_puzzle_ids"), cfg.model.puzzle_emb_dim)
    module = build_model(cfg.model, {**info, "num_puzzle_ids": 0} if fits else info,
                         pick_dtype(precision or cfg.train.precision, dev))
    if fits:
        module.puzzle_emb = torch.nn.Parameter(table.to(module.puzzle_emb.dtype))
    try:
        module.load_state_dict(weights)
    except RuntimeError as e:
        raise RecurError(f"{path}: weights do not fit the model in its config: {str(e).splitlines()[0]}") from None
    module = module.to(dev)
    cls = RecurLM if cfg.model.arch == "lm" else Recur
    return cls(torch.compile(module) if compile else module, cfg, info, task, dev, meta, source, notes)


class Trained:
    """A trained model with its config, dataset info and task."""

    def __init__(self, module: torch.nn.Module, cfg: RunConfig, info: dict, task: str, device: torch.device,
                 meta: dict, source: Path | None = None, notes: list[str] = ()):
        self.module, self.cfg, self.info, self.device, self.meta = module.eval(), cfg, info, device, meta
        self.task = REGISTRY[task]
        self.source = source
        """The model.safetensors file it was read from (None: built in memory)."""
        self.notes = list(notes)
        """Damaged newer checkpoints of the run that were skipped to load this one."""

    @property
    def run_dir(self) -> Path | None:
        """The run directory the checkpoint file sits in (<run>/checkpoints/step_N/model.safetensors), else its folder."""
        if self.source is None:
            return None
        ckpt = self.source.parent
        return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt

    def describe(self) -> str:
        """Which checkpoint this is, for the line every command that loads one prints."""
        step = self.meta.get("step")
        return f"{self.source}" + (f" (step {step})" if step is not None else "")


class Recur(Trained):
    """A trained recursive puzzle model."""

    @property
    def n_sup(self) -> int:
        return self.cfg.recursion.n_sup

    def _tensor(self, x, name: str, shape_tail: tuple) -> torch.Tensor:
        try:
            t = torch.as_tensor(np.asarray(x), dtype=torch.long)
        except (TypeError, ValueError) as e:
            raise RecurError(f"{name} must be an integer array: {e}") from None
        if t.dim() == len(shape_tail):
            t = t.unsqueeze(0)
        if tuple(t.shape[1:]) != shape_tail:
            raise RecurError(f"{name} has shape {tuple(t.shape)}, the model expects [batch, {', '.join(map(str, shape_tail))}]"
                             if shape_tail else f"{name} has shape {tuple(t.shape)}, expected [batch]")
        return t

    @torch.no_grad()
    def predict(self, inputs, puzzle_ids=None, steps: int | None = None, halt: str = "none",
                batch_size: int = 256, guidance: float = 1.0, stream: bool | None = None,
                threshold: float | None = None) -> Prediction:
        """Run token inputs [B, L] (or one [L]) through `steps` (default N_sup) supervision steps.

        halt="none" runs every step for every sample; "adaptive" stops a sample at its first step
        whose halting score is > 0 (q_halt > 0, or q_halt > q_continue for Q-learning models); the
        steps used are returned per sample; `threshold` > 0 halts later (score > threshold; default: the model's
        eval.halt_threshold, calibrated for the shipped models). `guidance` w decodes l_u + w*(l_c - l_u) (recur.inference).
        `stream`: continuous batching (a halted sample's slot takes the next one); default on for
        adaptive halting on a GPU. Both paths give the same answers.
        """
        if halt not in ("none", "adaptive"):
            raise RecurError(f"halt must be 'none' or 'adaptive', got {halt!r}")
        L, V = self.info["seq_len"], self.info["vocab_size"]
        x = self._tensor(inputs, "inputs", (L,))
        if x.numel() and (x.min() < 0 or x.max() >= V):
            raise RecurError(f"inputs hold token {int(x.max() if x.max() >= V else x.min())}; the vocabulary is 0..{V - 1}")
        ids = torch.zeros(len(x), dtype=torch.long) if puzzle_ids is None else self._tensor(puzzle_ids, "puzzle_ids", ())
        if len(ids) != len(x):
            raise RecurError(f"{len(ids)} puzzle_ids for {len(x)} inputs")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.info["num_puzzle_ids"]):
            raise RecurError(f"puzzle ids must be in 0..{self.info['num_puzzle_ids'] - 1}")
        n = steps or self.n_sup
        if n < 1:
            raise RecurError("steps must be >= 1")
        rec = self.cfg.recursion
        threshold = self.cfg.eval.halt_threshold if threshold is None else threshold
        if stream is None:
            stream = halt == "adaptive" and self.device.type == "cuda"
        if stream:
            parts = [infer(self.module, x.to(self.device), ids.to(self.device), n, halt, rec.act, rec.feedback, guidance,
                           threshold, batch_size)]
        else:  # batch after batch, each until its last puzzle stops
            parts = [infer(self.module, x[lo:lo + batch_size].to(self.device), ids[lo:lo + batch_size].to(self.device),
                           n, halt, rec.act, rec.feedback, guidance, threshold) for lo in range(0, len(x), batch_size)]
        cat = lambda name, dim=0: torch.cat([getattr(r, name).cpu() for r in parts], dim)  # noqa: E731
        return Prediction(tokens=cat("tokens"), logits=cat("logits").float(), steps=cat("steps"),
                          per_step=cat("per_step", 1), halt_score=cat("halt_score", 1))

    def solve(self, puzzles: list[str], steps: int | None = None, halt: str = "adaptive",
              threshold: float | None = None) -> tuple[np.ndarray, Prediction]:
        """Puzzle texts -> (input tokens [B, L], Prediction); malformed text raises RecurError."""
        inputs = np.stack([self.task.parse(p, self.info) for p in puzzles])
        return inputs, self.predict(inputs, steps=steps, halt=halt, threshold=threshold)


class RecurLM(Trained):
    """A trained language model (model.arch=lm)."""

    def tokenizer(self, path: str | None = None):
        """The model's tokenizer: the byte tokenizer, or the tokenizers JSON file at `path` (checked against the
        one the model was trained with)."""
        from .tasks.text import check_tokenizer, info_tokenizer, load_tokenizer

        if path is None:
            return info_tokenizer(self.info)
        tok = load_tokenizer(path)
        check_tokenizer(tok, self.info, f"the model {self.source}")
        return tok

    def generate(self, prompt: str, max_new_tokens: int = 64, tokenizer: str | None = None, **options):
        """Yield (text piece, depth) per generated token after `prompt` (BOS + its tokens), decoding with the KV
        cache, at most `max_new_tokens` and never past the model's context; `options` are recur.generate.stream's
        (temperature, top_k, seed, depth, exit, threshold, warm_start, kv_budget). Stops at EOS. Byte pieces that
        end mid-character wait for the rest."""
        import codecs

        from .generate import stream
        from .tasks.text import BOS, EOS, OFFSET

        tok = self.tokenizer(tokenizer)
        ids = np.concatenate(([BOS], tok.encode(prompt))).astype(np.int64)
        room = self.module.context - len(ids)
        if room < 1:
            raise RecurError(f"the prompt is {len(ids)} tokens (with BOS); the model's context of "
                             f"{self.module.context} leaves no room to generate")
        max_new_tokens = min(max_new_tokens, room)  # a window ends where the model's context does
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        seen: list[int] = []
        for step in stream(self.module, ids, max_new_tokens, stop=EOS, **options):
            t, depth = int(step.token[0]), int(step.depth[0])
            if t == EOS:
                break
            if tok.name == "byte":
                piece = utf8.decode(bytes([t - OFFSET])) if t >= OFFSET else ""
            else:  # a subword tokenizer: decode the whole continuation and emit what is new
                before = tok.decode(seen)
                seen.append(t)
                piece = tok.decode(seen)[len(before):]
            yield piece, depth
