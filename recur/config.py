"""The run configuration: typed dataclasses, presets and `key=value` overrides.

Every field has a default (the reference TRM recipe where one exists) and a docstring (the
string literal under it). Presets are TOML files that list only what they change (from the
defaults, or from the preset they name in `extends`); dotted overrides such as
`model.hidden=128` are applied on top. An unknown key, a wrong type or a
value outside a field's choices is a RecurError naming the key and the valid options.

Glossary (paper symbol -> recur name -> reference TRM/HRM name):
  x  input embedding           -> x                -> input_embeddings
  y  current answer (state)    -> y                -> z_H
  z  latent reasoning state    -> z                -> z_L
  n  latent updates per cycle  -> model.n          -> L_cycles
  T  recursion cycles per step -> model.T          -> H_cycles
  N_sup supervision steps      -> recursion.n_sup  -> halt_max_steps
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import textwrap
import tomllib
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from .errors import RecurError
from .tasks import REGISTRY as TASKS

PRESET_DIR = Path(__file__).parent / "presets"
PRECISIONS = ("auto", "float32", "bfloat16")  # train.precision, and --precision of eval/solve/profile
DEFAULT_PRESET = "quickstart"


@dataclass
class LMConfig:
    """The causal language models (model.arch = lm): one decoder-only family whose variants are these flags.
    Width, heads, SwiGLU expansion, RoPE base and norm epsilon are model.hidden/heads/expansion/rope_theta/norm_eps;
    model.layers is L, the layers of the `transformer` family. The puzzle-only model keys (T, n, mixer, pos,
    single_z, separate_nets, grad, prefix_len, puzzle_emb_dim, step_embedding) must stay at their defaults."""

    family: Literal["transformer", "recurrent"] = "transformer"
    """`transformer`: L Llama-style pre-norm layers, vanilla or with shared weights (`sharing`) and
    Mixture-of-Recursions routers (`router`). `recurrent`: Huginn's recurrent depth, prelude -> core^r -> coda with sandwich
    blocks; with `exit_router` the hybrid (a learned per-token exit)."""
    context: int = 0
    """Longest sequence the model reads (RoPE table, generation limit); 0 = the dataset's sequence length."""
    tie_embeddings: bool = True
    """The output head is the transposed token embedding (Huginn, SmolLM); false = a separate linear head."""
    sharing: Literal["none", "cycle", "sequence", "middle_cycle"] = "none"
    """Weight sharing of the transformer family (MoR `recursive.sharing`): none = L unique layers (vanilla);
    cycle = a block of L/N_r layers applied N_r times; sequence = each of L/N_r layers applied N_r times in a row;
    middle_cycle = unique first and last layers around a block of (L-2)//N_r layers applied N_r times (MoR's best)."""
    recursions: int = 1
    """N_r, applications of the shared block (MoR `num_recursion`); 1 with sharing = none."""
    router: Literal["none", "expert", "token"] = "none"
    """Mixture-of-Recursions routing on the shared block (needs sharing = cycle or middle_cycle). `expert`: a linear
    router per recursion picks the top-k tokens by capacity (hierarchically, among those picked before); the
    selection is not causal in training (top-k over the sequence), so evaluation and generation use the causal
    rule sigmoid > 0.5 that the BCE auxiliary loss trains. `token`: a router before recursion 1 gives every token
    a depth 1..N_r (softmax), with a balancing loss."""
    capacity: str = ""
    """Expert-choice capacities per recursion, comma-separated fractions of the sequence, non-increasing
    (MoR `mor.capacity`); empty = N_r/N_r, (N_r-1)/N_r, ..., 1/N_r."""
    alpha: float = 0.1
    """Expert-choice gate scale: h[sel] += alpha*sigmoid(router)*block(h[sel]) (MoR `alpha`)."""
    router_aux_weight: float = 0.001
    """Weight of the expert-choice BCE of the router logits against the top-k mask (MoR `coeff`)."""
    balance_weight: float = 0.1
    """Weight of the token-choice balancing loss sum_i P_i*f_i (mean router probability times N_r * share of
    tokens given depth i)."""
    kv: Literal["recursion", "share"] = "recursion"
    """Transformer family KV: `recursion` = every layer application keeps its own keys, only for the tokens active
    there (MoR recursion-wise caching); `share` = a block applied again reuses the keys and values of its first
    application (MoR recursive KV sharing), in training as in generation."""
    prelude: int = 2
    """P, layers of the recurrent family's prelude (run once)."""
    core: int = 4
    """R, layers of the recurrent core (iterated r times)."""
    coda: int = 2
    """C, layers of the coda (run once after the core)."""
    mean_depth: int = 32
    """r-bar, the mean of the training depth sampler (recur.models.looped.sample_depth) and the default depth in
    evaluation (Huginn `mean_recurrence`)."""
    depth_sigma: float = 0.5
    """sigma of the log-normal in the depth sampler."""
    backprop_depth: int = 8
    """k, the last iterations that are backpropagated (Huginn `mean_backprop_depth`); earlier ones run without
    gradients."""
    exit: Literal["none", "kl", "latent", "entropy", "argmax", "router"] = "none"
    """Per-token adaptive exit at inference (evaluation mode only): none = always the full depth; kl = KL between
    successive iterations' next-token distributions < threshold; latent = |s_i - s_(i-1)|/|s_i| < threshold;
    entropy = |H_i - H_(i-1)| < threshold; argmax = the argmax unchanged for `threshold` iterations; router = the
    hybrid's exit router, sigmoid > threshold (needs exit_router)."""
    exit_threshold: float = 0.0
    """Threshold of `exit`; 0 = the reference default: kl 1e-3, latent 0.03, entropy 1e-3, argmax 5 steps
    (Huginn's code), router 0.5."""
    exit_router: bool = False
    """Hybrid: a linear + sigmoid exit router on the core state after every iteration, trained by BCE against the
    KL criterion's exit decision (computed without gradients, threshold router_target_kl); its input is detached, so
    it learns to predict the exit without changing the language model."""
    router_target_kl: float = 0.001
    """KL threshold that defines the exit router's training target."""


@dataclass
class ModelConfig:
    """The recursive network (reference: the `arch:` section)."""

    arch: Literal["trm", "transformer", "lm"] = "trm"
    """Model family, a key of recur.models.REGISTRY: `trm` (the recursive model; HRM is `trm` with separate_nets,
    grad=one_step and recursion.act=q_learning), `transformer` (the non-recursive baseline: `layers` distinct
    blocks applied once per supervision step) or `lm` (the causal language models, section model.lm)."""
    hidden: int = 512
    """Width D of every token state (reference `hidden_size`)."""
    heads: int = 8
    """Attention heads; head width is hidden/heads."""
    expansion: float = 4.0
    """SwiGLU expansion; the inner width is round(expansion*2/3*width) rounded up to a multiple of ffn_multiple."""
    ffn_multiple: int = 256
    """SwiGLU inner widths are rounded up to a multiple of this (the reference: 256, which at small widths more than
    doubles them: 4*2/3*37 = 99 -> 256)."""
    layers: int = 2
    """Blocks in the shared net (reference `L_layers`)."""
    T: int = 3
    """Recursion cycles per supervision step; the first T-1 run without gradients (ref `H_cycles`)."""
    n: int = 6
    """Latent updates z <- net(z, y + x) per cycle before one answer update y <- net(y, z) (ref `L_cycles`)."""
    mixer: Literal["attention", "mlp_t"] = "attention"
    """Token mixing: self-attention, or `mlp_t`, a SwiGLU across the sequence axis (TRM-MLP)."""
    pos: Literal["rope", "learned", "none"] = "rope"
    """Position encoding (reference `pos_encodings`)."""
    rope_theta: float = 10000.0
    """RoPE base."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon (the norm has no weight)."""
    single_z: bool = False
    """One latent and no separate answer (TRM ablation "single feature"): z <- net(z, x) n times, then z <- net(z)."""
    separate_nets: bool = False
    """The answer update gets a net of its own, y <- net_y(y, z) (TRM ablation "separate f_H/f_L"; HRM's H module)."""
    grad: Literal["last_cycle", "one_step"] = "last_cycle"
    """Gradients through the whole last cycle (TRM), or only through its last z- and y-updates (HRM's 1-step gradient)."""
    prefix_len: int = 16
    """Prefix tokens before the puzzle (reference `puzzle_emb_len`); the Q-head reads position 0."""
    puzzle_emb_dim: int = 512
    """Width of the learned per-puzzle embedding spread over the prefix (<= prefix_len*hidden); 0 = the
    prefix tokens are plain registers (reference `puzzle_emb_ndim`). The table holds one row per puzzle id:
    puzzle_emb_dim x 4 bytes each in float32 (ARC-AGI-1 with K=1000: 875k rows x 512 = 1.8 GB), 2 in bfloat16."""
    puzzle_emb_dtype: Literal["float32", "bfloat16"] = "float32"
    """Storage of the per-puzzle table: float32 (the reference) or bfloat16 (half the memory; sign-SGD then rounds
    each updated row stochastically, so steps and weight decay below bfloat16's resolution survive on average)."""
    step_embedding: int = 0
    """DIS time conditioning: a learned embedding of the supervision step index s (clamped to 1..this) is added to
    x at every position; 0 = off. DIS sets it to N_sup (reference DIS `timestep_embed`)."""
    lm: LMConfig = field(default_factory=LMConfig)
    """The language-model settings (model.arch = lm only)."""


@dataclass
class RecursionConfig:
    """The recursion engine: deep supervision, halting, objective."""

    n_sup: int = 16
    """N_sup: supervision steps per example (reference `halt_max_steps`)."""
    schedule: Literal["streaming", "per_batch"] = "streaming"
    """`streaming`: the reference code; halted rows are refilled from the next batch every optimizer step.
    `per_batch`: the paper's pseudo-code; a batch runs until all its rows halt (or N_sup), then the next."""
    act: Literal["halt", "q_learning", "off"] = "halt"
    """Halting. `halt` (TRM): q_halt learns by BCE whether the answer is exactly right; rows halt when q_halt > 0.
    `q_learning` (HRM): q_continue also learns a bootstrapped target from an extra no-grad forward; rows halt when
    q_halt > q_continue. `off`: every row runs N_sup steps and no halting loss is trained."""
    exploration: float = 0.1
    """Probability that a row must run a uniform minimum number of steps in {2..N_sup} before halting."""
    loss: Literal["stablemax", "softmax"] = "stablemax"
    """Token loss: stablemax cross-entropy (the reference, in float64) or softmax cross-entropy."""
    loss_precision: Literal["float64", "float32"] = "float64"
    """Precision of the stablemax cross-entropy: float64 as in the reference, or float32 (faster on GPUs)."""
    halt_weight: float = 0.5
    """Weight of the halting BCE in the total loss."""
    targets: Literal["label", "input_to_label", "mask"] = "label"
    """Per-step targets y†_s (Deep Improvement Supervision). `label`: every step learns the final answer (TRM/HRM).
    `input_to_label` (the official DIS code): step s learns the input with a random floor(s/N_sup) share of the cells
    that differ from the label filled in from it (one random order per example, drawn when it enters). `mask` (the
    DIS paper): absorbing-state masking; each such cell is still masked (shows the input's token) at step s with
    probability 1 - s/N_sup, nested across steps. Given cells (input = label) are never corrupted."""
    feedback: Literal["input", "prediction"] = "input"
    """What the net sees as x at step s > 1: the puzzle (`input`, the DIS paper) or its own previous answer
    (`prediction`, argmax of the last step, as the official DIS code; PAD positions keep the puzzle's PAD)."""
    step_weights: Literal["uniform", "linear", "decay"] = "uniform"
    """Weight of step s in the loss: `uniform` 1; `linear` 2s/(N_sup+1) (the DIS paper, emphasises late steps);
    `decay` proportional to step_decay^(s-1) (CGAR), scaled to mean 1 over the N_sup steps."""
    step_decay: float = 0.7
    """lambda of step_weights=decay."""
    curriculum: str = ""
    """Depth curriculum (CGAR): space-separated stages `FRACTION:T,n`; before FRACTION of train.steps the model runs
    that depth, afterwards model.T/model.n. E.g. `0.3:1,2 0.6:2,4` grows (T,n) (1,2) -> (2,4) -> (3,6). Empty = off."""


def _data_config() -> type:
    """DataConfig: the task, the dataset directory and seed, and one section `data.<name>` per entry of
    recur.tasks.REGISTRY holding that task's own settings class, so that a new task is one file and its
    registry entry."""
    fields: list = [("task", Literal[tuple(TASKS)], field(default="sudoku")),
                    ("dir", str, field(default="")), ("seed", int, field(default=0))]
    fields += [(name, task.config, field(default_factory=task.config)) for name, task in TASKS.items()]
    cls = dataclasses.make_dataclass("DataConfig", fields)
    cls.__module__ = __name__
    cls.__doc__ = "Which task and dataset the run uses."
    cls.__field_docs__ = {
        "task": "Task, a key of recur.tasks.REGISTRY; its section below holds its settings.",
        "dir": "Prepared dataset directory; empty = a directory under data/ named after the data settings.",
        "seed": "Seed of the dataset build (generation, subsampling, augmentation).",
        **{name: f"{name} settings (used when task = {name}): {task.config.__doc__}" for name, task in TASKS.items()}}
    return cls


DataConfig = _data_config()


@dataclass
class OptimConfig:
    """Optimizers, learning-rate schedule and EMA."""

    optimizer: Literal["adam_atan2", "adamw"] = "adam_atan2"
    """The dense weights' optimizer: AdamATan2 (the TRM/HRM reference; Huginn uses an atan2 Adam too) or AdamW
    (eps 1e-8; the MoR recipe)."""
    lr: float = 1e-4
    """Peak learning rate of the dense weights' optimizer."""
    betas: tuple[float, float] = (0.9, 0.95)
    """Its (beta1, beta2)."""
    weight_decay: float = 0.1
    """Its decoupled weight decay."""
    grad_clip: float = 0.0
    """Clip the dense gradients' global norm to this before each step (0 = off; the MoR recipe uses 1.0)."""
    warmup: int = 2000
    """Linear warm-up steps."""
    schedule: Literal["constant", "cosine"] = "constant"
    """After warm-up: constant (the reference recipes) or cosine decay to min_lr_ratio*lr."""
    min_lr_ratio: float = 0.0
    """Floor of the cosine decay, as a fraction of lr."""
    puzzle_emb_lr: float = 1e-2
    """Learning rate of the sign-SGD on puzzle embeddings."""
    puzzle_emb_weight_decay: float = 0.1
    """Decoupled weight decay of the puzzle-embedding sign-SGD."""
    ema: bool = True
    """Keep an exponential moving average of the weights; it is evaluated and saved."""
    ema_rate: float = 0.999
    """EMA decay."""


@dataclass
class TrainConfig:
    """The training loop."""

    steps: int = 10000
    """Optimizer steps (one supervision step each)."""
    batch_size: int = 768
    """Global batch (split evenly across data-parallel ranks)."""
    log_every: int = 50
    """Steps between metric records in metrics.jsonl."""
    eval_every: int = 1000
    """Steps between evaluations (0 = only at the end)."""
    ckpt_every: int = 1000
    """Steps between checkpoints (0 = only at the end)."""
    keep_ckpts: int = 2
    """Checkpoints kept on disk (older ones are deleted; the last is always kept)."""
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    """Where to train; auto = CUDA, else MPS, else CPU."""
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Compute dtype (weights stay float32); auto = bfloat16 on CUDA and on CPUs with native bfloat16
    matmuls (AVX512-BF16 or AMX; about 2x faster there), float32 elsewhere."""
    compile: Literal["auto", "on", "off"] = "auto"
    """torch.compile the supervision step; auto = on for CUDA only."""
    time_limit: float = 0.0
    """Stop after this many minutes of training (evaluation excluded) even before train.steps (0 = no limit)."""
    threads: int = 0
    """CPU threads for torch; 0 = auto: one per core, less the cores other processes keep busy when the run starts,
    and down to one if a log window runs 3x slower than the best so far (on a busy 2-core machine two threads ran
    5-7x slower than one, idle 1.7x faster; see docs/benchmarks.md). Thread counts do not change the results."""
    out_dir: str = "runs"
    """Parent directory of run directories."""
    run_name: str = ""
    """Run directory name (empty = preset name plus a timestamp)."""
    tensorboard: bool = False
    """Also write TensorBoard event files (needs the tensorboard package)."""
    progress: bool = True
    """Show a progress bar."""
    init_from: str = ""
    """Start from this trained model's weights (a run, checkpoint directory or model.safetensors; what `recur
    adapt` sets). Its puzzle-embedding rows are kept when the table has the same size, else every row of the
    new table starts at the mean of the rows it trained (the reference's resize). Empty = a fresh model."""
    freeze: bool = False
    """Train only the per-puzzle embeddings; every other weight stays as train.init_from left it."""
    recompute: bool = False
    """Activation checkpointing: keep only the input of each backpropagated net call and run the call again during
    backward. The results are the same, for one more forward of those calls (with T=3, n=4 a step takes about 1.2x as
    long) and one call's activations held instead of n+1: ARC-AGI-1 on a CPU at batch 8 peaks 1.3 GB above the built
    model instead of 2.7 (docs/benchmarks.md section 12)."""


@dataclass
class EvalConfig:
    """Evaluation on the held-out split."""

    halt: Literal["none", "adaptive"] = "none"
    """`none`: every sample runs all N_sup steps (the reference protocol); `adaptive`: a sample stops at
    the first step whose q_halt > 0 and its answer is read there."""
    halt_threshold: float = 0.0
    """Adaptive halting stops a sample once its halting score is > this (0 = the trained decision; higher halts
    later: an accuracy-for-compute knob at inference). The default threshold of `recur solve`, `recur eval` and
    `Recur.predict` for this model; the shipped models set 4 (docs/benchmarks.md section 15)."""
    guidance: float = 1.0
    """Guided decoding w: read answers from l_u + w*(l_c - l_u), l_c the logits after a step and l_u those before
    it (the DIS paper's policy-improvement knob); 1 = plain decoding."""
    batch_size: int = 0
    """Evaluation batch (0 = the training batch)."""
    max_examples: int = 0
    """Evaluate on at most this many test examples (0 = all)."""
    show: int = 3
    """Unseen puzzles printed with the model's answer at the end of training."""


@dataclass
class RunConfig:
    """Everything a run needs; written to config.json in the run directory."""

    seed: int = 0
    """Seed of model init, data order and halting exploration."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The network."""
    recursion: RecursionConfig = field(default_factory=RecursionConfig)
    """The recursion engine."""
    data: DataConfig = field(default_factory=DataConfig)
    """The task and its data."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizers and schedule."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The training loop."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation."""


# --------------------------------------------------------------------------- field docs


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a config dataclass: {field name: the string literal under it}."""
    if hasattr(cls, "__field_docs__"):  # built by make_dataclass (DataConfig): no source to read
        return cls.__field_docs__
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for stmt, nxt in zip(body, body[1:]):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)):
            docs[stmt.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def describe(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, docstring) for every leaf field, for `recur keys` and error messages."""
    rows = []
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            rows += describe(hints[f.name], key + ".")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore
            rows.append((key, repr(default), docs.get(f.name, "")))
    return rows


# --------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + "|".join(str(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return "a pair of numbers like 0.9,0.95"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """Check (TOML values) or convert (CLI strings) `value` to the field type `tp`."""
    origin = typing.get_origin(tp)
    bad = RecurError(f"config key '{key}' expects {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if value == c or (isinstance(value, str) and value == str(c)):
                return c
        raise bad
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or len(items) != len(typing.get_args(tp)):
            raise bad
        return tuple(_coerce(key, t, v) for t, v in zip(typing.get_args(tp), items))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "on", "off", "yes", "no"):
            return value.lower() in ("true", "1", "on", "yes")
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                raise bad from None
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    raise TypeError(f"unsupported config field type {tp!r} for {key}")


def _unknown(key: str, name: str, cls: type) -> RecurError:
    valid = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean '{key[: -len(name)]}{close[0]}'?" if close else ""
    return RecurError(f"unknown config key '{key}' (valid keys here: {', '.join(valid)}){hint}")


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a nested dict; every key must exist and every value must type-check."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for name, value in data.items():
        key = prefix + name
        if name not in names:
            raise _unknown(key, name, cls)
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise RecurError(f"config key '{key}' is a section; give its keys ({key}.<name> = ...)")
            kwargs[name] = from_dict(tp, value, key + ".")
        else:
            kwargs[name] = _coerce(key, tp, value)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain JSON-able nested dicts (tuples become lists)."""
    return dataclasses.asdict(cfg)


def _merge(base: dict, delta: dict) -> dict:
    out = dict(base)
    for k, v in delta.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def override(data: dict[str, Any], assignment: str) -> dict[str, Any]:
    """Apply one `a.b.c=value` override to a nested dict (the value stays a string until typed)."""
    if "=" not in assignment:
        raise RecurError(f"override '{assignment}' is not of the form key=value (e.g. model.hidden=128)")
    key, value = assignment.split("=", 1)
    node: dict[str, Any] = {}
    delta = node
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node[p] = {}
        node = node[p]
    node[parts[-1]] = value.strip()
    return _merge(data, delta)


# --------------------------------------------------------------------------- presets


def list_presets() -> dict[str, str]:
    """{preset name: one-line description} of the presets shipped with recur."""
    return {p.stem: read_toml(p).get("description", "") for p in sorted(PRESET_DIR.glob("*.toml"))}


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise RecurError(f"cannot read preset {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise RecurError(f"preset {path} is not valid TOML: {e}") from None


def preset_path(name: str) -> Path:
    """A shipped preset by name, or a TOML file by path."""
    if name.endswith(".toml") or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise RecurError(f"preset file {name} does not exist")
        return path
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        names = list(list_presets())
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise RecurError(f"unknown preset '{name}' (presets: {', '.join(names)}){hint}")
    return path


def preset_settings(name: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A preset's settings as a nested dict, after those of the preset it `extends` (if any)."""
    if name in _seen:
        raise RecurError(f"presets extend each other in a loop: {' -> '.join(_seen + (name,))}")
    data = read_toml(preset_path(name))
    data.pop("description", None)
    parent = data.pop("extends", None)
    return _merge(preset_settings(parent, _seen + (name,)), data) if parent else data


def load_config(preset: str | None = None, overrides: list[str] = ()) -> RunConfig:
    """Dataclass defaults <- preset file (<- the preset it extends) <- `key=value` overrides, validated."""
    data: dict[str, Any] = preset_settings(preset) if preset else {}
    for a in overrides:
        data = override(data, a)
    cfg = from_dict(RunConfig, data)
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Cross-field checks that the types alone cannot express."""
    m, r, t = cfg.model, cfg.recursion, cfg.train
    checks = [
        (m.hidden > 0 and m.heads > 0 and m.hidden % m.heads == 0, "model.hidden must be a positive multiple of model.heads"),
        (m.pos != "rope" or (m.hidden // max(m.heads, 1)) % 2 == 0, "model.pos=rope needs an even head width (hidden/heads)"),
        (m.layers >= 1 and m.T >= 1 and m.n >= 1, "model.layers, model.T and model.n must be >= 1"),
        (m.prefix_len >= 0 and m.puzzle_emb_dim >= 0, "model.prefix_len and model.puzzle_emb_dim must be >= 0"),
        (m.puzzle_emb_dim <= m.prefix_len * m.hidden, "model.puzzle_emb_dim must fit in the prefix (<= prefix_len*hidden)"),
        (m.arch in ("trm", "lm") or not (m.single_z or m.separate_nets or m.grad != "last_cycle"),
         "model.single_z, separate_nets and grad are TRM settings; the transformer baseline has no recursion"),
        (not (m.single_z and m.separate_nets), "model.single_z has no answer update to give a separate net"),
        (r.n_sup >= 1, "recursion.n_sup must be >= 1"),
        (m.step_embedding >= 0, "model.step_embedding must be >= 0"),
        (r.targets == "label" or r.act == "off",
         "recursion.targets other than label train a fixed N_sup without halting; set recursion.act=off"),
        (0 < r.step_decay <= 1, "recursion.step_decay must be in (0, 1]"),
        (not r.curriculum or m.arch == "trm", "recursion.curriculum changes T and n, which only model.arch=trm has"),
        (0.0 <= r.exploration <= 1.0, "recursion.exploration must be in [0, 1]"),
        (t.steps >= 1 and t.batch_size >= 1, "train.steps and train.batch_size must be >= 1"),
        (t.log_every >= 1, "train.log_every must be >= 1"),
        (min(t.eval_every, t.ckpt_every, t.threads) >= 0, "train.eval_every, ckpt_every and threads must be >= 0"),
        (t.keep_ckpts >= 1, "train.keep_ckpts must be >= 1"),
        (t.time_limit >= 0, "train.time_limit must be >= 0 minutes (0 = no limit)"),
        (min(cfg.eval.batch_size, cfg.eval.max_examples, cfg.eval.show) >= 0,
         "eval.batch_size, eval.max_examples and eval.show must be >= 0 (0 = the training batch / all / none)"),
        (m.expansion > 0 and m.norm_eps > 0 and m.rope_theta > 0, "model.expansion, norm_eps and rope_theta must be > 0"),
        (m.ffn_multiple >= 1, "model.ffn_multiple must be >= 1"),
        (r.halt_weight >= 0, "recursion.halt_weight must be >= 0"),
        (0 <= cfg.optim.min_lr_ratio <= 1, "optim.min_lr_ratio must be in [0, 1]"),
        (min(cfg.optim.weight_decay, cfg.optim.puzzle_emb_lr, cfg.optim.puzzle_emb_weight_decay) >= 0,
         "optim.weight_decay, puzzle_emb_lr and puzzle_emb_weight_decay must be >= 0"),
        (all(0 <= b < 1 for b in cfg.optim.betas), "optim.betas must be in [0, 1)"),
        (cfg.optim.grad_clip >= 0, "optim.grad_clip must be >= 0 (0 = off)"),
        (cfg.optim.warmup >= 0 and cfg.optim.lr >= 0, "optim.warmup and optim.lr must be >= 0"),
        (0 <= cfg.optim.ema_rate < 1, "optim.ema_rate must be in [0, 1)"),
    ]
    for ok, message in checks:
        if not ok:
            raise RecurError(message)
    _check_lm(m)
    lm, text = cfg.model.arch == "lm", TASKS[cfg.data.task].text
    if lm != text:
        raise RecurError(f"data.task={cfg.data.task} is a {'text' if text else 'puzzle'} task; it needs "
                         f"{'model.arch=lm' if text else 'a puzzle model (model.arch=trm or transformer)'}")
    getattr(cfg.data, cfg.data.task).check()
    curriculum_stages(r.curriculum)


def curriculum_stages(spec: str) -> list[tuple[float, int, int]]:
    """Parse recursion.curriculum into [(fraction, T, n)], fractions increasing in (0, 1]."""
    stages = []
    for item in spec.split():
        try:
            frac, depth = item.split(":")
            T, n = (int(v) for v in depth.split(","))
            stage = (float(frac), T, n)
        except ValueError:
            raise RecurError(f"recursion.curriculum stage '{item}' is not FRACTION:T,n (e.g. 0.3:1,2)") from None
        if not (0 < stage[0] <= 1 and T >= 1 and n >= 1) or (stages and stage[0] <= stages[-1][0]):
            raise RecurError(f"recursion.curriculum stage '{item}': fractions must increase within (0, 1], T, n >= 1")
        stages.append(stage)
    return stages


PUZZLE_MODEL_KEYS = ("T", "n", "mixer", "pos", "single_z", "separate_nets", "grad", "prefix_len", "puzzle_emb_dim",
                     "step_embedding", "ffn_multiple", "puzzle_emb_dtype")
"""model.* keys that only the puzzle models read; a language-model run that changes one is an error."""


def _check_lm(m: ModelConfig) -> None:
    """Cross-field checks of model.lm (and that LM and puzzle settings are not mixed)."""
    c, default = m.lm, ModelConfig()
    if m.arch != "lm":
        if c != LMConfig():
            raise RecurError("model.lm.* settings apply to model.arch=lm only")
        return
    changed = [k for k in PUZZLE_MODEL_KEYS if getattr(m, k) != getattr(default, k)]
    if changed:
        raise RecurError(f"model.{changed[0]} is a puzzle-model setting that model.arch=lm does not read; "
                         f"leave it at its default")
    recurrent = c.family == "recurrent"
    checks = [
        ((m.hidden // m.heads) % 2 == 0, "model.arch=lm uses RoPE, which needs an even head width (hidden/heads)"),
        (c.context >= 0, "model.lm.context must be >= 0"),
        (c.recursions >= 1, "model.lm.recursions (N_r) must be >= 1"),
        (c.sharing != "none" or c.recursions == 1, "model.lm.sharing=none (vanilla) needs model.lm.recursions=1"),
        (c.sharing not in ("cycle", "sequence") or m.layers % c.recursions == 0,
         f"model.lm.sharing={c.sharing} needs model.layers ({m.layers}) divisible by model.lm.recursions "
         f"({c.recursions})"),
        (c.sharing != "middle_cycle" or (m.layers > 2 and (m.layers - 2) % c.recursions == 0),
         f"model.lm.sharing=middle_cycle needs model.layers - 2 ({m.layers - 2}) to be a positive multiple of "
         f"model.lm.recursions ({c.recursions})"),
        (c.router == "none" or c.sharing in ("cycle", "middle_cycle"),
         "model.lm.router needs a shared block applied N_r times: model.lm.sharing=cycle or middle_cycle"),
        (c.capacity == "" or c.router == "expert", "model.lm.capacity applies to model.lm.router=expert"),
        (c.alpha > 0 and c.router_aux_weight >= 0 and c.balance_weight >= 0,
         "model.lm.alpha must be > 0, router_aux_weight and balance_weight >= 0"),
        (not recurrent or (c.sharing == "none" and c.router == "none" and c.kv == "recursion"),
         "model.lm.sharing, router and kv are transformer-family settings; the recurrent family shares its core"),
        (not recurrent or m.layers == default.layers,
         "model.layers is the transformer family's depth; the recurrent family uses model.lm.prelude/core/coda"),
        (not recurrent or (c.prelude >= 0 and c.core >= 1 and c.coda >= 0),
         "model.lm.core must be >= 1, prelude and coda >= 0"),
        (not recurrent or (c.mean_depth >= 1 and c.backprop_depth >= 1 and c.depth_sigma >= 0),
         "model.lm.mean_depth and backprop_depth must be >= 1, depth_sigma >= 0"),
        (recurrent or (c.exit == "none" and not c.exit_router),
         "model.lm.exit and exit_router are settings of model.lm.family=recurrent"),
        (c.exit != "router" or c.exit_router, "model.lm.exit=router needs model.lm.exit_router=true"),
        (c.exit_threshold >= 0 and c.router_target_kl > 0, "model.lm.exit_threshold must be >= 0, router_target_kl > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise RecurError(message)
    capacities(c)


def capacities(c: LMConfig) -> list[float]:
    """Expert-choice capacity per recursion: model.lm.capacity parsed, or N_r/N_r ... 1/N_r when it is empty."""
    n = c.recursions
    if not c.capacity:
        return [(n - r) / n for r in range(n)]
    try:
        caps = [float(v) for v in c.capacity.split(",")]
    except ValueError:
        raise RecurError(f"model.lm.capacity '{c.capacity}' is not comma-separated numbers (e.g. 1,0.67,0.33)") from None
    if len(caps) != n:
        raise RecurError(f"model.lm.capacity has {len(caps)} values but model.lm.recursions is {n}")
    if not all(0 < v <= 1 for v in caps) or any(b > a for a, b in zip(caps, caps[1:])):
        raise RecurError(f"model.lm.capacity '{c.capacity}' must be non-increasing fractions in (0, 1]")
    return caps
