"""Checkpoints: tensors in safetensors, everything else in JSON; nothing is ever unpickled.

A checkpoint is a directory `<run>/checkpoints/step_NNNNNN/`:

    model.safetensors   the weights to evaluate and predict with (the EMA when it is on), with the
                        run config, dataset info and format version in the file's metadata, so
                        this one file is enough for `recur.load`
    train.safetensors   live weights, optimizer tensors, the engine carry, RNG states
    train.json          step, sampler position, optimizer hyper-parameters, format version

Directories are written under a temporary name and renamed, so a killed run never leaves a
half-written checkpoint behind and never overwrites a finished one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import RecurError

FORMAT = "recur-checkpoint"
FORMAT_VERSION = 1
MODEL_FILE, TRAIN_FILE, TRAIN_JSON = "model.safetensors", "train.safetensors", "train.json"


def step_dir(run: Path, step: int) -> Path:
    return Path(run) / "checkpoints" / f"step_{step:07d}"


def list_checkpoints(run: Path) -> list[Path]:
    """Finished checkpoints of a run, oldest first."""
    root = Path(run) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("step_") and (p / MODEL_FILE).is_file())


def save_model(path: Path, weights: dict[str, torch.Tensor], meta: dict) -> None:
    """Write the predict-time weights with `meta` (config, info, step...) in the header."""
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    header.update({k: json.dumps(v) for k, v in meta.items()})
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(path), metadata=header)


def save(run: Path, step: int, model_weights: dict, model_meta: dict, train_tensors: dict, train_state: dict,
         keep: int) -> Path:
    """Write checkpoint `step` atomically and delete all but the newest `keep`."""
    final = step_dir(run, step)
    tmp = final.with_name("." + final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(tmp / MODEL_FILE, model_weights, model_meta)
    save_file({k: v.detach().contiguous().cpu() for k, v in train_tensors.items()}, str(tmp / TRAIN_FILE))
    (tmp / TRAIN_JSON).write_text(json.dumps({"format_version": FORMAT_VERSION, **train_state}, indent=1))
    if final.exists():  # the same step saved twice (e.g. resumed exactly at a checkpoint): replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run)[:-keep]:
        shutil.rmtree(old)
    return final


def resolve(path: str | Path) -> Path:
    """A run directory, a checkpoint directory or a model.safetensors file -> the model file."""
    p = Path(path)
    if p.is_file():
        return p
    if (p / MODEL_FILE).is_file():
        return p / MODEL_FILE
    ckpts = list_checkpoints(p)
    if ckpts:
        return ckpts[-1] / MODEL_FILE
    if not p.exists():
        raise RecurError(f"{path} does not exist")
    raise RecurError(f"{path} holds no recur checkpoint (expected a run directory, a checkpoint directory "
                     f"or a {MODEL_FILE} file)")


def read_model(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(weights, meta) from a model file, run or checkpoint directory; RecurError if it is not one."""
    f = resolve(path)
    try:
        with safe_open(str(f), framework="pt") as sf:
            header = sf.metadata() or {}
        weights = load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise RecurError(f"{f} is not a readable checkpoint (corrupt or truncated?): {e}") from None
    if header.get("format") != FORMAT:
        raise RecurError(f"{f} is a safetensors file but not a recur checkpoint")
    if header.get("format_version") != str(FORMAT_VERSION):
        raise RecurError(f"{f} has checkpoint format {header.get('format_version')}, this recur reads {FORMAT_VERSION}")
    try:
        meta = {k: json.loads(v) for k, v in header.items() if k not in ("format", "format_version")}
    except json.JSONDecodeError as e:
        raise RecurError(f"{f} has a corrupt header: {e}") from None
    return weights, meta


def read_train_state(ckpt: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, json state) needed to resume from checkpoint directory `ckpt`."""
    try:
        tensors = load_file(str(ckpt / TRAIN_FILE))
        state = json.loads((ckpt / TRAIN_JSON).read_text())
    except (SafetensorError, OSError, ValueError) as e:
        raise RecurError(f"checkpoint {ckpt} cannot be resumed from (missing or corrupt training state): {e}") from None
    if state.get("format_version") != FORMAT_VERSION:
        raise RecurError(f"checkpoint {ckpt} has format {state.get('format_version')}, this recur reads {FORMAT_VERSION}")
    return tensors, state


def optimizer_state(opts: list[torch.optim.Optimizer]) -> tuple[dict[str, torch.Tensor], list]:
    """Split optimizer state dicts into tensors (for safetensors) and JSON-able rest."""
    tensors, rest = {}, []
    for i, opt in enumerate(opts):
        sd = opt.state_dict()
        plain = {"param_groups": sd["param_groups"], "state": {}}
        for pid, st in sd["state"].items():
            plain["state"][str(pid)] = {}
            for k, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"optim.{i}.{pid}.{k}"] = v
                else:
                    plain["state"][str(pid)][k] = v
        rest.append(plain)
    return tensors, rest


def load_optimizer_state(opts: list[torch.optim.Optimizer], tensors: dict, rest: list) -> None:
    if len(rest) != len(opts):
        raise RecurError(f"checkpoint has {len(rest)} optimizers, the model needs {len(opts)}")
    for i, (opt, plain) in enumerate(zip(opts, rest)):
        state = {}
        for pid, st in plain["state"].items():
            st = dict(st)
            prefix = f"optim.{i}.{pid}."
            st.update({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            state[int(pid)] = st
        opt.load_state_dict({"state": state, "param_groups": plain["param_groups"]})
