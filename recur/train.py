"""The Trainer: data, model, engine and optimizers wired together, with log/eval/checkpoint cadence.

Nothing here is model- or task-specific: an engine (recur.engine) runs each training step of its
model family and names its metrics, tasks build data, models are looked up in the registry. The
trainer owns the data order, optimizers, learning rate, EMA, gradient sync, checkpoints and exact
resume, the run directory and its lock, logging, progress and the evaluation cadence.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import __version__, checkpoint
from .config import RunConfig, from_dict, override, to_dict, validate
from .data import Dataset, TrainSampler, find, prepare
from .dist import Dist, auto_threads, pick_device, pick_dtype
from .engine import build_engine
from .errors import RecurError
from .lock import LOCK_FILE, RunLock
from .models import build_model
from .optim import EMA, SPARSE_PREFIX, build_optimizers, set_lr
from .plots import training_plot
from .runlog import RunLog, require_tensorboard
from .supervision import legacy_window

# settings that may change when a run is resumed (they do not change its math)
RESUMABLE = {"train.steps", "train.time_limit", "train.log_every", "train.eval_every", "train.ckpt_every", "train.keep_ckpts",
             "train.device", "train.compile", "train.threads", "train.tensorboard", "train.progress",
             "eval.halt", "eval.halt_threshold", "eval.guidance", "eval.batch_size", "eval.max_examples", "eval.show"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def run_record(run_dir: Path) -> dict:
    """A run directory's config.json; RecurError when it is not a run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RecurError(f"{run_dir} does not exist" if not run_dir.exists() else f"{run_dir} is not a run directory")
    try:
        record = json.loads((run_dir / "config.json").read_text())
        record["config"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise RecurError(f"{run_dir} is not a resumable run (config.json missing or corrupt: {e})") from None
    return record


def resumed_config(run_dir: Path, overrides: list[str] = ()) -> RunConfig:
    """The run's saved config with `key=value` overrides applied; only the RESUMABLE settings may change."""
    saved = run_record(run_dir)["config"]
    data = saved
    for a in overrides:
        data = override(data, a)
    cfg = from_dict(RunConfig, data)
    validate(cfg)
    old_flat, new_flat = _flat(to_dict(from_dict(RunConfig, saved))), _flat(to_dict(cfg))
    bad = [k for k in new_flat if new_flat[k] != old_flat.get(k) and k not in RESUMABLE]
    if bad:
        raise RecurError(f"cannot change {', '.join(bad)} when resuming {run_dir} (only {', '.join(sorted(RESUMABLE))})")
    return cfg


class Trainer:
    """Train `cfg` into `run_dir`; `resume=True` continues the run's latest checkpoint exactly."""

    def __init__(self, cfg: RunConfig, run_dir: Path, resume: bool = False, preset: str = "", say=print):
        self.cfg, self.run_dir, self.preset = cfg, Path(run_dir), preset
        t = cfg.train
        if t.tensorboard:
            require_tensorboard()  # fail before anything is written
        self.device = pick_device(t.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.dist = Dist.from_env(self.device)
        self._say = say
        if self.device.type == "cpu":
            torch.set_num_threads(t.threads or auto_threads())
        self.best_rate = 0.0  # the fastest log window so far (steps/s), for train.threads=0's slow-down check
        self.dtype = pick_dtype(t.precision, self.device)
        # one writer per run: rank 0 holds the run directory's lock until fit() ends
        self.lock = RunLock(self.run_dir, "resume" if resume else "train") if self.dist.main else None
        claimed = False
        try:
            if self.lock is not None:
                claimed = not resume and self._claim_new_run_dir()
                if resume:
                    self.lock.acquire()
            self._build(resume)
        except BaseException:
            self.close()
            if claimed:  # nothing of the run was written yet: leave no empty run directory behind
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise

    def _puzzle_table(self) -> dict:
        """The per-puzzle embedding table's size, for summary.json (it is not in `params`, as in the reference)."""
        emb = getattr(self.model, SPARSE_PREFIX, None)
        if emb is None:
            return {}
        return {"puzzle_emb_rows": emb.shape[0], "puzzle_emb_bytes": emb.numel() * emb.element_size()}

    def _init_from(self, path: str) -> None:
        """train.init_from: the trained weights, with the puzzle-embedding table resized if the data differs."""
        weights, meta = checkpoint.read_model(path)
        own = self.model.state_dict()
        emb = weights.get(SPARSE_PREFIX)
        if emb is not None and SPARSE_PREFIX in own and emb.shape != own[SPARSE_PREFIX].shape:
            trained = emb[(emb != 0).any(-1)]
            mean = (trained if len(trained) else emb).mean(0)
            weights[SPARSE_PREFIX] = mean.expand_as(own[SPARSE_PREFIX]).clone()
            self.say(f"train.init_from: {len(own[SPARSE_PREFIX])} puzzle-embedding rows start at the mean of the "
                     f"{len(trained)} rows {path} trained")
        try:
            self.model.load_state_dict(weights)
        except RuntimeError as e:
            raise RecurError(f"train.init_from={path} does not fit this model: {str(e).splitlines()[0]}") from None

    def _claim_new_run_dir(self) -> bool:
        """Create the run directory and take its lock; an existing run is never written into."""
        if self.run_dir.exists() and any(p.name != LOCK_FILE for p in self.run_dir.iterdir()):
            raise RecurError(f"run directory {self.run_dir} already exists; resume it with --resume or pick "
                             f"another train.run_name")
        existed = self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RecurError(f"cannot write the run directory {self.run_dir}: {e.strerror}") from None
        self.lock.acquire()
        if any(p.name != LOCK_FILE for p in self.run_dir.iterdir()):  # another process started it meanwhile
            raise RecurError(f"run directory {self.run_dir} already exists; resume it with --resume or pick "
                             f"another train.run_name")
        return not existed

    def _dataset(self, resume: bool) -> Path:
        """The run's dataset: for a resumed run the one it trained on (found wherever it is now, or rebuilt from
        its settings when gone), else the one cfg.data describes (built once, cached on disk)."""
        if not resume:
            return prepare(self.cfg.data)
        record = run_record(self.run_dir).get("dataset", "")
        path = find(record, self.run_dir, missing_ok=True)
        if path is None:
            path = prepare(self.cfg.data)
            want = record.get("fingerprint") if isinstance(record, dict) else None
            if want and Dataset(path).fingerprint != want:
                raise RecurError(f"the run's dataset is gone, and rebuilding it from its settings into {path} gave "
                                 f"other data (fingerprint {Dataset(path).fingerprint}, the run's {want}): "
                                 f"its source files changed?")
        return path

    def _build(self, resume: bool) -> None:
        cfg, t = self.cfg, self.cfg.train
        # data: rank 0 builds or finds it, the others wait and then find it there
        if self.dist.main:
            t0 = time.perf_counter()
            path = self._dataset(resume)
            self.say(f"dataset {path} ready ({time.perf_counter() - t0:.1f}s)")
        self.dist.barrier()
        self.data = Dataset(self._dataset(resume))
        self.train_split, self.test_split = self.data.splits["train"], self.data.splits["test"]
        if t.batch_size > len(self.train_split):
            raise RecurError(f"train.batch_size={t.batch_size} is larger than the {len(self.train_split)} training "
                             f"examples of {self.data.path}; lower it or use more data")

        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, self.data.info, self.dtype).to(self.device)
        if t.init_from and not resume:
            self._init_from(t.init_from)
        for m in self.model.modules():  # the modules that unroll a recursion
            if hasattr(m, "recompute"):
                m.recompute = t.recompute
        if t.freeze:
            for name, p in self.model.named_parameters():
                p.requires_grad_(name.startswith(SPARSE_PREFIX))
        self.dist.broadcast_params(self.model)
        self.opts = build_optimizers(self.model, cfg.optim, cfg.seed)
        self.ema = EMA(self.model, cfg.optim.ema_rate) if cfg.optim.ema else None
        self.engine = build_engine(cfg, self.data.info, self.data.task, self.dist, self.device, self.dtype)
        self.sampler = TrainSampler(self.train_split, t.batch_size, cfg.seed, self.dist.rank, self.dist.world)
        self.step = 0
        self.train_s_before = self.train_s = 0.0  # seconds spent in training steps (eval/checkpoints excluded)
        # the engine's named sums over the current log window, and over the whole run (this rank's part; summed
        # over ranks when reported); saved in checkpoints, so a resumed run logs the same records
        self.window: dict[str, torch.Tensor] = {}
        self.window_steps = 0  # optimizer steps the window holds (a resumed one may have begun before the resume)
        self.totals: dict[str, torch.Tensor] = {}
        # the EMA leaves sparse tables (puzzle embeddings) out, so the evaluation copy shares the live ones: an
        # ARC-AGI-1 table is 1.8 GB, and a second copy of it was half the process's memory
        tables = {id(p): p for n, p in self.model.named_parameters() if n.startswith(SPARSE_PREFIX)}
        self.eval_model = copy.deepcopy(self.model, memo=tables) if self.ema else self.model
        compile_on = t.compile == "on" or (t.compile == "auto" and self.device.type == "cuda")
        self.step_model = torch.compile(self.model) if compile_on else self.model

        if resume:
            self._load()
            if self.step >= t.steps:
                raise RecurError(f"{self.run_dir} is finished: its newest checkpoint is at step {self.step} and "
                                 f"train.steps={t.steps}; pass train.steps=N with N > {self.step} to train further")
        elif self.dist.main:
            self._start_run_dir()
        self.log = RunLog(self.run_dir, t.tensorboard, enabled=self.dist.main)
        if resume:
            self.log.truncate_after(self.step)

    def close(self) -> None:
        """Release the run directory (fit() does this when it ends)."""
        if self.lock is not None:
            self.lock.release()

    # ------------------------------------------------------------------ helpers

    def say(self, msg: str) -> None:
        if self.dist.main:
            self._say(msg)

    def _start_run_dir(self) -> None:
        try:
            (self.run_dir / "config.json").write_text(json.dumps({
                "preset": self.preset, "recur": __version__, "torch": torch.__version__,
                "python": platform.python_version(), "world_size": self.dist.world,
                "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "dataset": self.data.record(self.run_dir), "config": to_dict(self.cfg)}, indent=1))
        except OSError as e:
            raise RecurError(f"cannot write the run directory {self.run_dir}: {e.strerror}") from None

    def _to_device(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        pin = self.device.type == "cuda"
        out = {}
        for k, v in batch.items():
            t = torch.from_numpy(v)
            out[k] = (t.pin_memory() if pin else t).to(self.device, non_blocking=pin)
        return out

    def eval_weights(self) -> dict[str, torch.Tensor]:
        return self.ema.weights(self.model) if self.ema else self.model.state_dict()

    def model_meta(self) -> dict:
        return {"config": to_dict(self.cfg), "info": self.data.info, "task": self.data.meta["task"],
                "step": self.step, "preset": self.preset, "dataset": self.data.record(self.run_dir)}

    # ------------------------------------------------------------------ checkpoints

    def save(self) -> Path | None:
        if not all(checkpoint.finite(p) for p in self.model.parameters()):
            kept = checkpoint.list_checkpoints(self.run_dir)
            raise RecurError(f"training diverged: weights hold NaN or infinity at step {self.step}, so no checkpoint "
                             f"was written (the newest is {kept[-1].name if kept else 'none'}); lower optim.lr")
        opt_tensors, opt_rest = checkpoint.optimizer_state(self.opts)
        # the puzzle tables are not averaged, so the model file's copy (eval_weights) is the live one
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items() if not k.startswith(SPARSE_PREFIX)}
        tensors.update(opt_tensors)
        tensors.update(self.engine.state_dict())
        tensors.update({f"metrics.window.{k}": v for k, v in self._reduce(self.window).items()})
        tensors.update({f"metrics.totals.{k}": v for k, v in self._reduce(self.totals).items()})
        tensors["rng.torch"] = torch.get_rng_state()
        if not self.dist.main:
            return None
        state = {"step": self.step, "train_s": self.train_s, "sampler": self.sampler.state_dict(),
                 "window_steps": self.window_steps,
                 "optimizers": opt_rest, "world_size": self.dist.world}
        path = checkpoint.save(self.run_dir, self.step, self.eval_weights(), self.model_meta(), tensors, state,
                               self.cfg.train.keep_ckpts)
        return path

    def _load(self) -> None:
        notes: list[str] = []
        ckpt = checkpoint.newest(self.run_dir, notes, train=True)
        for note in notes:
            self.say(f"note: {note}")
        if ckpt is None:
            raise RecurError(f"{self.run_dir} has no checkpoint to resume from")
        tensors, state = checkpoint.read_train_state(ckpt)
        weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        bad = next((k for k, v in weights.items() if not checkpoint.finite(v)), None)
        if bad is not None:
            raise RecurError(f"checkpoint {ckpt} holds NaN or infinite values in {bad}; resume from an earlier one")
        eval_weights, _ = checkpoint.read_model(ckpt)  # the EMA's weights and the puzzle tables, checked there
        for k, v in eval_weights.items():  # (older checkpoints hold the tables in both files)
            if k.startswith(SPARSE_PREFIX):
                weights.setdefault(k, v)
        try:
            self.model.load_state_dict(weights)
        except RuntimeError as e:
            raise RecurError(f"checkpoint {ckpt} does not fit this model: {str(e).splitlines()[0]}") from None
        if self.ema:
            for k in self.ema.shadow:
                self.ema.shadow[k].copy_(eval_weights[k])
        checkpoint.load_optimizer_state(self.opts, tensors, state["optimizers"])
        self.sampler.load_state_dict(state["sampler"])
        self.engine.load_state_dict(tensors)
        torch.set_rng_state(tensors["rng.torch"])
        self.window_steps = int(state.get("window_steps", 0))
        if "metrics.window" in tensors:  # written before metrics had names
            self.window_steps = int(tensors["metrics.window"][-1].item() / state.get("world_size", 1))
            tensors.update({f"metrics.window.{k}": v for k, v in legacy_window(tensors.pop("metrics.window")).items()})
            tensors.update({f"metrics.totals.{k}": v for k, v in zip(("examples", "calls", "flops"),
                                                                     tensors.pop("metrics.totals"))})
        for name, store in (("window", self.window), ("totals", self.totals)):
            prefix = f"metrics.{name}."
            for k, v in tensors.items():
                if k.startswith(prefix):  # the sums of all ranks, counted once (on rank 0)
                    store[k[len(prefix):]] = (v if self.dist.main else torch.zeros_like(v)).to(self.device)
        self.step = int(state["step"])
        self.train_s_before = self.train_s = float(state["train_s"])
        self.say(f"resumed {self.run_dir} from {ckpt.name} (step {self.step})")

    # ------------------------------------------------------------------ loop

    def evaluate(self, limit: int | None = None) -> dict:
        """The engine's evaluation of the weights to evaluate (the EMA when it is on) on the test split."""
        if self.ema:
            self.eval_model.load_state_dict(self.eval_weights())
        return self.engine.evaluate(self.eval_model, self.test_split, limit)

    def _reduce(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named sums over every rank (one all-reduce, in name order)."""
        names = sorted(sums)
        if not names:
            return {}
        return dict(zip(names, self.dist.all_reduce(torch.stack([sums[k] for k in names])).unbind()))

    def _train_step(self, total: int) -> float:
        """One optimizer step: the engine's forward and loss, backward, gradient sync, optimizers, EMA."""
        res = self.engine.step(self.step_model, lambda: self._to_device(self.sampler.next()), self.step, total)
        res.loss.backward()
        self.dist.sync_grads(self.model)
        if self.cfg.optim.grad_clip:
            dense = [p for p in self.model.parameters() if p.grad is not None and not p.grad.is_sparse]
            torch.nn.utils.clip_grad_norm_(dense, self.cfg.optim.grad_clip)
        lr = set_lr(self.opts, self.cfg.optim, self.step + 1, total)
        for opt in self.opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        if self.ema:
            self.ema.update(self.model)
        self.step += 1
        self.window_steps += 1
        with torch.no_grad():
            for store, sums in ((self.window, res.sums), (self.totals, res.totals)):
                for k, v in sums.items():
                    store[k] = store[k] + v.double() if k in store else v.detach().double()
        return lr

    def _check_speed(self, rate: float) -> None:
        """train.threads=0: threads that wait for cores another process took run several times slower than one
        thread; drop to one when a window runs 3x slower than the best window so far."""
        self.best_rate = max(self.best_rate, rate)
        if (self.cfg.train.threads == 0 and self.device.type == "cpu" and torch.get_num_threads() > 1
                and rate < self.best_rate / 3):
            torch.set_num_threads(1)
            self.say(f"note: training slowed to {rate:.2f} steps/s from {self.best_rate:.2f} (other processes on the "
                     f"cores?); continuing with 1 thread (set train.threads to choose)")

    def _log_window(self, lr: float, seconds: float, steps: int, elapsed: float) -> dict:
        """Reduce the window's sums over ranks into one metrics.jsonl record (the engine names its fields), then
        clear them. `steps` in `seconds`: this process's speed."""
        window = {k: v.item() for k, v in self._reduce(self.window).items()}
        record = self.engine.record(window, self.window_steps)
        self.window, self.window_steps = {}, 0
        return {"kind": "train", "step": self.step, "lr": lr, **record, "steps_per_s": steps / seconds,
                "elapsed_s": elapsed}

    def _catch_interrupt(self) -> list | None:
        """Turn the first Ctrl-C into a flag checked between steps (a second one stops at once).

        Only for a single process in the main thread; returns the flag list, or None when not installed.
        """
        if self.dist.world > 1 or threading.current_thread() is not threading.main_thread():
            return None
        flag: list = []

        def handler(sig, frame):
            flag.append(sig)
            signal.signal(signal.SIGINT, signal.default_int_handler)

        signal.signal(signal.SIGINT, handler)
        return flag

    def fit(self) -> dict:
        """Train to `train.steps`, evaluating, logging and checkpointing on the configured cadence."""
        t = self.cfg.train
        self.model.train()
        bar = tqdm(total=t.steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (self.dist.main and t.progress))
        say, self._say = self._say, (bar.write if not bar.disable else self._say)
        stop = self._catch_interrupt()
        t_start = time.perf_counter()
        try:
            last_eval, last_ckpt = self._loop(bar, stop, t_start)
            return self._summary(t_start, last_eval, last_ckpt)
        finally:
            bar.close()
            self._say = say
            if stop is not None:
                signal.signal(signal.SIGINT, signal.default_int_handler)
            self.close()

    def _summary(self, t_start: float, last_eval: dict | None, last_ckpt: Path | None) -> dict:
        totals = {k: v.item() for k, v in self._reduce(self.totals).items()}
        summary = {"step": self.step, "train_s": self.train_s, "wall_s": time.perf_counter() - t_start,
                   "params": sum(p.numel() for n, p in self.model.named_parameters() if not n.startswith("puzzle_emb")),
                   **self._puzzle_table(),
                   **self.engine.summary(totals, self.model),
                   "eval": last_eval,
                   "checkpoint": str(last_ckpt) if last_ckpt else None}
        if self.dist.main:
            try:
                (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
                summary["plot"] = str(training_plot(self.run_dir) or "")
            except OSError as e:
                raise RecurError(f"cannot write the run summary into {self.run_dir}: {e.strerror} (the checkpoint "
                                 f"{last_ckpt} is complete)") from None
        return summary

    def _loop(self, bar, stop: list | None, t_start: float) -> tuple[dict | None, Path | None]:
        t = self.cfg.train
        total = t.steps
        t_log, s_log, side_s = t_start, self.step, 0.0  # side_s: evaluation and checkpoint time, not train_s
        side_log = 0.0  # side_s at the last log record: a window's speed counts training steps only
        last_eval = last_ckpt = last_ckpt_step = None
        while self.step < total:
            if stop:  # Ctrl-C arrived during the last step: keep the work done so far, then stop
                if last_ckpt_step != self.step:
                    self.say(f"interrupted: saved {self.save()}; continue with --resume {self.run_dir}")
                raise KeyboardInterrupt
            lr = self._train_step(total)
            bar.update(1)
            last = self.step == total or bool(
                t.time_limit and self.train_s_before + time.perf_counter() - t_start - side_s >= 60 * t.time_limit)
            if self.step % t.log_every == 0 or last:
                now = time.perf_counter()
                rec = self._log_window(lr, now - t_log - (side_s - side_log), self.step - s_log, now - t_start)
                self._check_speed(rec["steps_per_s"])
                if not math.isfinite(rec["loss"]):
                    kept = checkpoint.list_checkpoints(self.run_dir)
                    raise RecurError(f"training diverged: the loss is {rec['loss']} by step {self.step}; the newest "
                                     f"checkpoint ({kept[-1].name if kept else 'none'}) is kept; lower optim.lr or "
                                     f"raise optim.warmup")
                self.log.write(rec)
                bar.set_postfix({**{short: f"{rec[k]:.3f}" for k, short in self.engine.progress.items()},
                                 "lr": f"{lr:.1e}"}, refresh=False)
                t_log, s_log, side_log = now, self.step, side_s
            eval_due = (t.eval_every and self.step % t.eval_every == 0) or last
            ckpt_due = (t.ckpt_every and self.step % t.ckpt_every == 0) or last
            if not (eval_due or ckpt_due):
                continue
            if self.device.type == "cuda":
                torch.cuda.synchronize()  # so that train_s counts the queued work
            t0 = time.perf_counter()
            self.train_s = self.train_s_before + t0 - t_start - side_s
            if eval_due:
                res = self.evaluate()
                last_eval = {"kind": "eval", "step": self.step, "train_s": self.train_s, **res}
                self.log.write(last_eval)
                self.say(f"step {self.step}: {self.engine.eval_line(res)}")
            if ckpt_due:
                last_ckpt, last_ckpt_step = self.save(), self.step
            side_s += time.perf_counter() - t0
            if last:
                break
        return last_eval, last_ckpt


def new_run_dir(cfg: RunConfig, preset: str) -> Path:
    """<out_dir>/<run_name>, or <out_dir>/<preset>-<timestamp> when no name is given."""
    if cfg.train.run_name:
        return Path(cfg.train.out_dir) / cfg.train.run_name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.train.out_dir) / f"{Path(preset).stem or 'run'}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path
