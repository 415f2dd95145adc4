"""Checkpoints: tensors in safetensors, everything else in JSON; nothing is ever unpickled.

A checkpoint is a directory `<run>/checkpoints/step_NNNNNN/`:

    model.safetensors   the weights to evaluate and predict with (the EMA when it is on), with the
                        run config, dataset info and format version in the file's metadata, so
                        this one file is enough for `recur.load`
    train.safetensors   live weights, optimizer tensors, the engine carry, RNG states; the puzzle-
                        embedding table, which the EMA leaves out, is only in model.safetensors
                        (an ARC-AGI-1 table is 1.8 GB)
    train.json          step, sampler position, optimizer hyper-parameters, format version

Directories are written under a temporary name and renamed, so a killed run never leaves a
half-written checkpoint behind and never overwrites a finished one; a failed write (a full disk)
removes its temporary directory and says which checkpoint is the newest intact one.

One rule for checkpoints that are damaged on disk (a file missing, corrupt or truncated): given a
run, the newest usable checkpoint is used and each newer damaged one is named in a note; given a
checkpoint directory or file, a damaged one is an error. Weights holding NaN or infinity are an error.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import RecurError

FORMAT = "recur-checkpoint"
FORMAT_VERSION = 1
MODEL_FILE, TRAIN_FILE, TRAIN_JSON = "model.safetensors", "train.safetensors", "train.json"


def finite(t: torch.Tensor) -> bool:
    """Whether t holds no NaN or infinity. Checked in slices: a whole-tensor isfinite of a 1.8 GB puzzle table
    makes 3 GB of temporaries."""
    if not t.is_floating_point():
        return True
    return all(bool(c.isfinite().all()) for c in t.detach().reshape(-1).split(1 << 24))


def step_dir(run: Path, step: int) -> Path:
    return Path(run) / "checkpoints" / f"step_{step:07d}"


def list_checkpoints(run: Path) -> list[Path]:
    """Checkpoint directories of a run, oldest first (unfinished writes have a temporary name and are not listed;
    a listed one may still be damaged: see `usable`)."""
    root = Path(run) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if re.fullmatch(r"step_\d+", p.name) and p.is_dir())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)
    os.chmod(path, 0o666 & ~_umask())  # safetensors writes 0600; a checkpoint is as readable as the run's other files


def save_model(path: Path, weights: dict[str, torch.Tensor], meta: dict) -> None:
    """Write the predict-time weights with `meta` (config, info, step...) in the header."""
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    header.update({k: json.dumps(v) for k, v in meta.items()})
    _save_tensors(weights, path, header)


def save(run: Path, step: int, model_weights: dict, model_meta: dict, train_tensors: dict, train_state: dict,
         keep: int) -> Path:
    """Write checkpoint `step` atomically and delete all but the newest `keep`."""
    final = step_dir(run, step)
    tmp = final.with_name("." + final.name + ".tmp")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_model(tmp / MODEL_FILE, model_weights, model_meta)
        _save_tensors(train_tensors, tmp / TRAIN_FILE)
        (tmp / TRAIN_JSON).write_text(json.dumps({"format_version": FORMAT_VERSION, **train_state}, indent=1))
        if final.exists():  # the same step saved twice (e.g. resumed exactly at a checkpoint): replace it whole
            shutil.rmtree(final)
        os.replace(tmp, final)
    except (OSError, SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = [p.name for p in list_checkpoints(run) if p != final]
        raise RecurError(f"cannot write checkpoint {final.name} into {run}: {getattr(e, 'strerror', None) or e}; "
                         f"the newest intact checkpoint is {kept[-1] if kept else 'none'}") from None
    for old in list_checkpoints(run)[:-keep]:
        shutil.rmtree(old)
    return final


def damage(ckpt: Path, train: bool = False) -> str | None:
    """Why checkpoint directory `ckpt` cannot be used (None: it can): a file missing, or unreadable.
    `train`: the training state is needed too (resuming)."""
    for name in (MODEL_FILE, TRAIN_FILE, TRAIN_JSON) if train else (MODEL_FILE,):
        f = ckpt / name
        if not f.is_file():
            return f"{name} is missing"
        try:
            if name == TRAIN_JSON:
                json.loads(f.read_text())
            else:
                with safe_open(str(f), framework="pt") as sf:
                    sf.metadata()
        except (SafetensorError, OSError, ValueError) as e:
            return f"{name} is corrupt or truncated ({e})"
    return None


def newest(run: Path, notes: list[str], train: bool = False) -> Path | None:
    """The newest usable checkpoint of `run` (None: it has none); each newer damaged one goes into `notes`."""
    for ckpt in reversed(list_checkpoints(run)):
        problem = damage(ckpt, train)
        if problem is None:
            return ckpt
        notes.append(f"skipped checkpoint {ckpt}: {problem}")
    return None


def resolve(path: str | Path, notes: list[str] | None = None) -> Path:
    """A run directory (its newest usable checkpoint; skipped ones go into `notes`), a checkpoint directory, a
    model.safetensors file, or the name of a model shipped with recur (recur.pretrained; a path of that name
    wins) -> the model file."""
    from . import pretrained

    p = Path(path)
    if not p.exists() and (shipped := pretrained.path(str(path))) is not None:
        return shipped
    if p.is_file():
        return p
    if (p / MODEL_FILE).is_file() or re.fullmatch(r"step_\d+", p.name):
        return p / MODEL_FILE
    skipped: list[str] = []
    ckpt = newest(p, skipped)
    if notes is not None:
        notes += skipped
    if ckpt is not None:
        return ckpt / MODEL_FILE
    if skipped:
        raise RecurError(f"{path} has no usable checkpoint: {'; '.join(skipped)}")
    if not p.exists():
        raise RecurError(f"{path} does not exist")
    raise RecurError(f"{path} holds no recur checkpoint (expected a run directory, a checkpoint directory "
                     f"or a {MODEL_FILE} file)")


def read_model(path: str | Path, notes: list[str] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(weights, meta) from a model file, run or checkpoint directory; RecurError if it is not one, or if a
    weight holds NaN or infinity. `notes` collects the damaged newer checkpoints of a run that were skipped."""
    f = resolve(path, notes)
    if not f.is_file():
        raise RecurError(f"{f} is missing (the checkpoint directory is incomplete)")
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
    bad = next((k for k, v in weights.items() if not finite(v)), None)
    if bad is not None:
        raise RecurError(f"{f} holds NaN or infinite values in {bad} (saved from a diverged run?)")
    return weights, meta


def export(src: str | Path, out: str | Path, force: bool = False) -> tuple[Path, Path]:
    """Write `src`'s model file to `out` for sharing: the weights and the header's config, dataset info and data
    settings, without the training state and without this machine's paths (where the data and runs were).
    An existing `out` is kept unless `force`. -> (the model file read, the file written)."""
    out = Path(out)
    if out.exists() and not force:
        raise RecurError(f"{out} exists; pass --force to replace it")
    source = resolve(src)
    weights, meta = read_model(source)
    record = meta.get("dataset")
    if isinstance(record, dict):  # found again by its settings and fingerprint, not by where it was
        meta["dataset"] = {k: record[k] for k in ("settings", "fingerprint") if k in record}
    elif record is not None:
        del meta["dataset"]
    cfg = meta.get("config", {})
    cfg.get("data", {})["dir"] = ""
    cfg.get("train", {}).update(out_dir="runs", run_name="", init_from="")
    tmp = out.with_name("." + out.name + ".tmp")  # written whole, then renamed: a failed write keeps the old file
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_model(tmp, weights, meta)
        tmp.replace(out)
    except (OSError, SafetensorError) as e:
        tmp.unlink(missing_ok=True)
        raise RecurError(f"cannot write {out}: {getattr(e, 'strerror', None) or e}") from None
    return source, out


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
