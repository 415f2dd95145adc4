"""Reading checkpoints written by the reference TRM and HRM code.

TRM: SamsungSAILMontreal/TinyRecursiveModels; HRM: sapientinc/HRM (and the TRM repo's copy of it).
Both save `torch.save(model.state_dict())` of their compiled loss head, so keys look like
`_orig_mod.model.inner.L_level.layers.0.self_attn.qkv_proj.weight`, and write the run's config to
`all_config.yaml` beside it. The state dict is read with `weights_only=True` (no arbitrary
unpickling); the architecture comes from the yaml's `arch:` section when present, from the
weights' shapes where they tell, and from `model.*` overrides given by the user.

Names: the reference's L_level is recur's `net` (the z-update), HRM's H_level is `net_y` (the
y-update, separate_nets), H_init/L_init are y_init/z_init.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import torch

from .checkpoint import MODEL_FILE, save_model
from .config import RunConfig, load_config, to_dict
from .errors import RecurError
from .models import build_model

KINDS = ("trm-reference", "hrm-reference")
# reference name (after `inner.`) -> recur name
_TOP = {"embed_tokens.embedding_weight": "embed", "lm_head.weight": "head.weight", "q_head.weight": "q_head.weight",
        "q_head.bias": "q_head.bias", "H_init": "y_init", "L_init": "z_init", "puzzle_emb.weights": "puzzle_emb",
        "embed_pos.embedding_weight": "pos_emb"}
_LAYER = {"self_attn.qkv_proj.weight": "attn.qkv.weight", "self_attn.o_proj.weight": "attn.out.weight",
          "mlp.gate_up_proj.weight": "mlp.gate_up.weight", "mlp.down_proj.weight": "mlp.down.weight",
          "mlp_t.gate_up_proj.weight": "mix.gate_up.weight", "mlp_t.down_proj.weight": "mix.down.weight"}
_LAYER_RE = re.compile(r"(L_level|H_level)\.layers\.(\d+)\.(.+)")
_NET = {"L_level": "net", "H_level": "net_y"}


def strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop torch.compile's `_orig_mod.` and the loss head's `model.` so keys start at `inner.`."""
    out = {}
    for k, v in sd.items():
        while k.startswith(("_orig_mod.", "model.")):
            k = k.split(".", 1)[1]
        out[k] = v
    return out


def map_keys(sd: dict[str, torch.Tensor], kind: str = "trm-reference") -> dict[str, torch.Tensor]:
    """Reference state dict (prefixes stripped) -> recur state dict; unknown keys are an error.

    A TRM has one net (L_level); an HRM has two (L_level and H_level).
    """
    levels = ("L_level", "H_level") if kind == "hrm-reference" else ("L_level",)
    out, unknown = {}, []
    for k, v in sd.items():
        name = k[len("inner."):] if k.startswith("inner.") else None
        m = _LAYER_RE.fullmatch(name or "")
        if name in _TOP:
            out[_TOP[name]] = v
        elif m and m.group(1) in levels and m.group(3) in _LAYER:
            out[f"{_NET[m.group(1)]}.layers.{m.group(2)}.{_LAYER[m.group(3)]}"] = v
        else:
            unknown.append(k)
    if unknown:
        raise RecurError(f"not a reference {kind.split('-')[0].upper()} state dict: unexpected keys "
                         f"{', '.join(unknown[:4])}{' ...' if len(unknown) > 4 else ''}")
    for net in {_NET[lv] for lv in levels}:
        if not any(k.startswith(net + ".layers.") for k in out):
            level = next(lv for lv in levels if _NET[lv] == net)
            raise RecurError(f"not a reference {kind.split('-')[0].upper()} state dict: no inner.{level}.layers.* keys")
    return out


def _read_state_dict(src: Path) -> dict[str, torch.Tensor]:
    if not src.is_file():
        raise RecurError(f"{src} does not exist")
    try:
        if src.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(src))
        else:
            sd = torch.load(src, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - whatever fails to parse is the user's bad input, not a bug
        raise RecurError(f"{src} is not a torch.save or safetensors state dict (corrupt or truncated?)") from None
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise RecurError(f"{src} does not hold a state dict (a mapping of names to tensors)")
    return sd


def _layers(weights: dict[str, torch.Tensor], net: str) -> int:
    return 1 + max(int(k.split(".")[2]) for k in weights if k.startswith(net + ".layers."))


def _settings(kind: str, arch: dict, weights: dict[str, torch.Tensor]) -> dict[str, object]:
    """recur settings from the reference `arch:` section and the weights' shapes."""
    name = str(arch.get("name", kind.split("-")[0])).split("@")[0]
    model = kind.split("-")[0]
    if model not in name:
        raise RecurError(f"all_config.yaml describes '{arch.get('name')}', not a {model.upper()}; "
                         f"use --from {'hrm' if 'hrm' in name else 'trm'}-reference")
    D = int(arch.get("hidden_size", weights["embed"].shape[1]))
    ndim = weights["puzzle_emb"].shape[1] if "puzzle_emb" in weights else 0
    if model == "hrm":  # HRM: ceil(ndim/D) prefix tokens; the reference TRM: puzzle_emb_len (0 means the same)
        prefix = math.ceil(ndim / D)
    else:
        prefix = 0 if ndim == 0 else (int(arch.get("puzzle_emb_len", 16)) or math.ceil(ndim / D))
    out = {"model.hidden": D, "model.layers": _layers(weights, "net"),
           "model.mixer": "mlp_t" if any(".mix." in k for k in weights) else "attention",
           "model.pos": "learned" if "pos_emb" in weights else arch.get("pos_encodings", "rope"),
           "model.prefix_len": prefix, "model.puzzle_emb_dim": ndim}
    if model == "hrm":
        if _layers(weights, "net_y") != out["model.layers"]:
            raise RecurError(f"the H and L modules have {_layers(weights, 'net_y')} and {out['model.layers']} layers; "
                             "recur's separate nets have one depth")
        # the reference HRM's defaults where they differ from TRM's (config/arch/hrm_v1.yaml); a yaml overrides them
        out.update({"model.separate_nets": True, "model.grad": "one_step", "recursion.act": "q_learning",
                    "optim.ema": False, "model.T": 2, "model.n": 2})
    elif arch.get("no_ACT_continue", True) is False:
        out["recursion.act"] = "q_learning"
    table = {"num_heads": "model.heads", "expansion": "model.expansion", "H_cycles": "model.T", "L_cycles": "model.n",
             "rope_theta": "model.rope_theta", "rms_norm_eps": "model.norm_eps", "halt_max_steps": "recursion.n_sup",
             "halt_exploration_prob": "recursion.exploration"}
    out.update({key: arch[ref] for ref, key in table.items() if ref in arch})
    loss = (arch.get("loss") or {}).get("loss_type")
    if loss:
        out["recursion.loss"] = {"stablemax_cross_entropy": "stablemax", "softmax_cross_entropy": "softmax"}.get(loss, loss)
    return out


def _seq_len(cfg: RunConfig, weights, given: int | None, all_config: dict, base: Path) -> int:
    if given:
        return given
    if cfg.model.mixer == "mlp_t":  # the token-mixing SwiGLU is as wide as the sequence with prefix
        return weights["net.layers.0.mix.down.weight"].shape[0] - cfg.model.prefix_len
    for data_path in all_config.get("data_paths", []) + [all_config.get("data_path", "")]:
        for root in (Path.cwd(), base):
            meta = root / data_path / "test" / "dataset.json"
            if data_path and meta.is_file():
                return int(json.loads(meta.read_text())["seq_len"])
    raise RecurError("cannot tell the puzzle length from the checkpoint; pass --seq-len (81 for 9x9 Sudoku)")


def convert(kind: str, src: Path, dst: Path, overrides: list[str] = (), seq_len: int | None = None,
            task: str = "sudoku") -> tuple[Path, list[str]]:
    """Write a recur checkpoint directory `dst` from a reference state-dict file `src`.

    Returns the model file and notes on settings that had to be assumed.
    """
    if kind not in KINDS:
        raise RecurError(f"unknown checkpoint kind '{kind}' (known: {', '.join(KINDS)})")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise RecurError(f"{dst} already exists; refusing to overwrite it")
    weights = map_keys(strip_prefixes(_read_state_dict(src)), kind)
    if "embed" not in weights:
        raise RecurError(f"{src} is not a reference state dict (no inner.embed_tokens.embedding_weight)")
    all_config, notes = {}, []
    yaml_path = src.parent / "all_config.yaml"
    if yaml_path.is_file():
        import yaml
        try:
            all_config = yaml.safe_load(yaml_path.read_text()) or {}
        except yaml.YAMLError as e:
            raise RecurError(f"{yaml_path} is not valid YAML: {str(e).splitlines()[0]}") from None
    settings = _settings(kind, all_config.get("arch") or {}, weights)
    if not all_config:
        given = {o.split("=", 1)[0] for o in overrides}
        if "pos_emb" in weights and seq_len and "model.prefix_len" not in given:
            settings["model.prefix_len"] = weights["pos_emb"].shape[0] - seq_len  # positions cover prefix + puzzle
        told = {"model.pos"} if "pos_emb" in weights else set()  # the weights show these
        told |= {"model.prefix_len"} if kind == "hrm-reference" else set()  # an HRM's prefix is ceil(ndim/D)
        assumed = [k for k in ("model.heads", "model.T", "model.n", "model.pos", "model.prefix_len")
                   if k not in given | told]
        notes.append(f"no all_config.yaml beside {src}: assumed the reference defaults for "
                     f"{', '.join(assumed)}; pass model.*=... if that run used others")
    cfg = load_config(None, [f"{k}={v}" for k, v in settings.items()] + list(overrides))
    L = _seq_len(cfg, weights, seq_len, all_config, src.parent)
    info = {"vocab_size": int(weights["embed"].shape[0]), "seq_len": int(L),
            "num_puzzle_ids": int(weights["puzzle_emb"].shape[0]) if "puzzle_emb" in weights else 1}
    if task != "sudoku":
        raise RecurError(f"unknown task '{task}' (known: sudoku)")
    size = math.isqrt(L)
    if size * size != L or size not in (4, 6, 9) or info["vocab_size"] != size + 2:
        raise RecurError(f"a Sudoku model needs seq_len 16/36/81 and vocab size+2; this one has seq_len {L}, "
                         f"vocab {info['vocab_size']}")
    info["size"] = size
    cfg = replace(cfg, data=replace(cfg.data, sudoku=replace(cfg.data.sudoku, size=size)))
    model = build_model(cfg.model, info)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        detail = [ln.strip() for ln in str(e).splitlines()[1:2]] or [str(e)]
        raise RecurError(f"the reference weights do not fit the architecture {settings}: {detail[0]}") from None
    dst.mkdir(parents=True, exist_ok=True)
    out = dst / MODEL_FILE
    save_model(out, model.state_dict(), {"config": to_dict(cfg), "info": info, "task": task, "step": None,
                                        "converted_from": str(src)})
    return out, notes
