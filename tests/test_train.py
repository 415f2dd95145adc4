"""Training runs end to end on the micro preset: determinism, exact resume, data parallelism."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import recur
from recur.checkpoint import finite, list_checkpoints, read_model
from recur.config import load_config
from recur.errors import RecurError
from recur.supervision import DeepSupervision
from recur.runlog import read_metrics
from recur.train import Trainer, resumed_config


def micro(tmp_path, *extra):
    return load_config("micro", [f"data.dir={tmp_path / 'data'}", "eval.show=0", *extra])


def train_records(run):
    return [r for r in read_metrics(run) if r["kind"] == "train"]


def final_weights(run):
    return read_model(run)[0]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """An uninterrupted 12-step run (checkpoints at 6 and 12)."""
    tmp = tmp_path_factory.mktemp("base")
    run = tmp / "run"
    Trainer(micro(tmp), run, say=lambda m: None).fit()
    return tmp, run


def test_same_seed_same_run(baseline, tmp_path):
    tmp, run = baseline
    shutil.copytree(tmp / "data", tmp_path / "data")
    again = tmp_path / "run"
    Trainer(micro(tmp_path), again, say=lambda m: None).fit()
    assert train_records(again) == [dict(r, steps_per_s=r2["steps_per_s"], elapsed_s=r2["elapsed_s"])
                                    for r, r2 in zip(train_records(run), train_records(again))]
    a, b = final_weights(run), final_weights(again)
    assert all(torch.equal(a[k], b[k]) for k in a)


def run_until(monkeypatch, run_dir, data_root, call: int, action) -> None:
    """Train micro into run_dir and call `action()` when the engine starts its `call`-th step."""
    real_step, calls = DeepSupervision.step, []

    def step(self, *a, **kw):
        calls.append(1)
        if len(calls) == call:
            action()
        return real_step(self, *a, **kw)

    monkeypatch.setattr(DeepSupervision, "step", step)
    try:
        Trainer(micro(data_root), run_dir, say=lambda m: None).fit()
    finally:
        monkeypatch.setattr(DeepSupervision, "step", real_step)


def test_killed_run_resumes_exactly(baseline, tmp_path, monkeypatch):
    tmp, run = baseline
    shutil.copytree(tmp / "data", tmp_path / "data")
    crashed = tmp_path / "run"

    def kill():
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):  # after the step-6 checkpoint and the step-8 log record
        run_until(monkeypatch, crashed, tmp_path, 9, kill)
    assert [p.name for p in list_checkpoints(crashed)] == ["step_0000006"]

    resumed = Trainer(resumed_config(crashed), crashed, resume=True, say=lambda m: None)
    assert resumed.step == 6
    resumed.fit()
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("steps_per_s", "elapsed_s")} for r in rs]  # noqa: E731
    assert strip(train_records(crashed)) == strip(train_records(run))  # same losses after the resume, none twice
    a, b = final_weights(run), final_weights(crashed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_changed_math_and_existing_dirs(baseline, tmp_path):
    tmp, run = baseline
    with pytest.raises(RecurError, match="cannot change model.hidden"):
        resumed_config(run, ["model.hidden=64"])
    assert resumed_config(run, ["train.steps=20"]).train.steps == 20
    before = (run / "config.json").read_text()
    with pytest.raises(RecurError, match="already exists"):
        Trainer(micro(tmp), run, say=lambda m: None)
    assert (run / "config.json").read_text() == before


def test_two_processes_match_one(baseline, tmp_path):
    """torchrun with 2 gloo processes x batch 8 each == 1 process x batch 16."""
    tmp, run = baseline
    shutil.copytree(tmp / "data", tmp_path / "data")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "recur.cli",
           "train", "micro", f"data.dir={tmp_path / 'data'}", "eval.show=0", f"train.out_dir={tmp_path}",
           "train.run_name=ddp", "train.precision=float32"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    ddp = tmp_path / "ddp"
    assert json.loads((ddp / "config.json").read_text())["world_size"] == 2
    for r1, r2 in zip(train_records(run), train_records(ddp), strict=True):
        assert r1["step"] == r2["step"] and r1["halted"] == r2["halted"]
        assert abs(r1["loss"] - r2["loss"]) < 1e-5 and abs(r1["exact_accuracy"] - r2["exact_accuracy"]) < 1e-9
    a, b = final_weights(run), final_weights(ddp)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_ctrl_c_saves_a_checkpoint_and_resumes(baseline, tmp_path, monkeypatch):
    tmp, run = baseline
    shutil.copytree(tmp / "data", tmp_path / "data")
    stopped = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C during step 8 (after the step-6 checkpoint)
        run_until(monkeypatch, stopped, tmp_path, 8, lambda: signal.raise_signal(signal.SIGINT))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert [p.name for p in list_checkpoints(stopped)][-1] == "step_0000008"  # the finished step 8 was kept
    Trainer(resumed_config(stopped), stopped, resume=True, say=lambda m: None).fit()
    a, b = final_weights(run), final_weights(stopped)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bfloat16_compute_keeps_float32_master_weights(baseline, tmp_path):
    tmp, _ = baseline
    shutil.copytree(tmp / "data", tmp_path / "data")
    trainer = Trainer(micro(tmp_path, "train.precision=bfloat16", "model.puzzle_emb_dim=16"), tmp_path / "run",
                      say=lambda m: None)
    assert trainer.model.dtype == torch.bfloat16
    summary = trainer.fit()
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(s.dtype == torch.bfloat16 for s in trainer.engine.carry.state)
    assert 0 <= summary["eval"]["token_accuracy"] <= 1
    assert all(v.dtype == torch.float32 for v in final_weights(tmp_path / "run").values())


def test_tensorboard_without_the_package_is_a_clear_error(baseline, tmp_path):
    try:
        import torch.utils.tensorboard  # noqa: F401
        pytest.skip("tensorboard is installed")
    except ImportError:
        pass
    tmp, _ = baseline
    shutil.copytree(tmp / "data", tmp_path / "data")
    with pytest.raises(RecurError, match="pip install 'recur\\[tensorboard\\]'"):
        Trainer(micro(tmp_path, "train.tensorboard=true"), tmp_path / "run", say=lambda m: None)
    assert not (tmp_path / "run").exists()


def test_time_limit_stops_early_with_a_final_evaluation_and_checkpoint(baseline, tmp_path):
    tmp, _ = baseline
    shutil.copytree(tmp / "data", tmp_path / "data")
    run = tmp_path / "run"
    summary = Trainer(micro(tmp_path, "train.steps=100000", "train.time_limit=0.02", "train.eval_every=0",
                            "train.ckpt_every=0"), run, say=lambda m: None).fit()
    assert 1 <= summary["step"] < 100000 and summary["train_s"] >= 1.2
    assert summary["eval"]["step"] == summary["step"]
    assert [p.name for p in list_checkpoints(run)] == [f"step_{summary['step']:07d}"]


def test_auto_precision_is_bfloat16_only_where_it_is_native(monkeypatch):
    from recur import dist

    cpu = torch.device("cpu")
    monkeypatch.setattr(dist, "cpu_has_bf16", lambda: True)
    assert dist.pick_dtype("auto", cpu) == torch.bfloat16 and dist.pick_dtype("float32", cpu) == torch.float32
    monkeypatch.setattr(dist, "cpu_has_bf16", lambda: False)
    assert dist.pick_dtype("auto", cpu) == torch.float32 and dist.pick_dtype("bfloat16", cpu) == torch.bfloat16
    assert dist.pick_dtype("auto", torch.device("cuda")) == torch.bfloat16


def test_auto_threads_drop_to_one_when_training_slows_threefold(baseline, tmp_path, monkeypatch):
    tmp, _ = baseline
    shutil.copytree(tmp / "data", tmp_path / "data")
    trainer = Trainer(micro(tmp_path), tmp_path / "run", say=lambda m: None)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    chosen = []
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    for rate in (10.0, 12.0, 5.0):  # slower, but not threefold
        trainer._check_speed(rate)
    assert chosen == []
    trainer._check_speed(3.9)
    assert chosen == [1]
    trainer.close()


def test_the_evaluation_copy_shares_the_puzzle_table_and_averages_the_rest(tmp_path):
    """The EMA leaves the sparse puzzle-embedding table out, so the evaluation model uses the live table, not a
    second copy of it (1.8 GB on ARC-AGI-1); its dense weights are the EMA's, apart from the live ones."""
    trainer = Trainer(micro(tmp_path, "model.puzzle_emb_dim=8", "model.prefix_len=1"), tmp_path / "run",
                      say=lambda m: None)
    try:
        assert trainer.eval_model.puzzle_emb is trainer.model.puzzle_emb
        live, averaged = dict(trainer.model.named_parameters()), dict(trainer.eval_model.named_parameters())
        assert all(averaged[n] is not p for n, p in live.items() if n != "puzzle_emb")
        trainer.fit()
        summary = read_metrics(tmp_path / "run")[-1]
        assert summary["kind"] == "eval" and 0 <= summary["token_accuracy"] <= 1
    finally:
        trainer.close()


@pytest.mark.parametrize("legacy,dtype", [(False, "float32"), (True, "float32"), (False, "bfloat16")])
def test_the_puzzle_table_is_saved_once_and_resumes_exactly(tmp_path, legacy, dtype):
    """train.safetensors leaves the puzzle table out (model.safetensors holds the live one: the EMA does not average
    it), and a resume restores it bit for bit (a bfloat16 table's stochastic rounding too); a checkpoint written
    before, with the table in both files, too."""
    extra = ("model.puzzle_emb_dim=8", "model.prefix_len=1", "train.steps=8", "train.ckpt_every=4", "train.eval_every=0",
             f"model.puzzle_emb_dtype={dtype}")
    full = tmp_path / "full"
    Trainer(micro(tmp_path, *extra), full, say=lambda m: None).fit()
    first = list_checkpoints(full)[0]
    assert first.name == "step_0000004"
    train_keys = load_file(str(first / "train.safetensors")).keys()
    assert "model.puzzle_emb" not in train_keys and "model.embed" in train_keys
    assert "puzzle_emb" in read_model(first)[0]

    crashed = tmp_path / "crashed"
    shutil.copytree(full, crashed)
    shutil.rmtree(list_checkpoints(crashed)[-1])
    (crashed / "summary.json").unlink()
    if legacy:
        f = list_checkpoints(crashed)[0] / "train.safetensors"
        tensors = load_file(str(f))
        tensors["model.puzzle_emb"] = read_model(first)[0]["puzzle_emb"]
        save_file(tensors, str(f))
    resumed = Trainer(resumed_config(crashed), crashed, resume=True, say=lambda m: None)
    assert resumed.step == 4
    resumed.fit()
    a, b = final_weights(full), final_weights(crashed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (a["puzzle_emb"] != 0).any()  # the table trained, so the comparison means something
    loaded = recur.load(full).module.puzzle_emb  # recur.load takes the file's table as the parameter
    assert loaded.shape == a["puzzle_emb"].shape and torch.equal(loaded, a["puzzle_emb"])
    f = list_checkpoints(full)[-1] / "model.safetensors"  # a table of the wrong width is refused, not taken
    with safe_open(str(f), "pt") as sf:
        header = sf.metadata()
    save_file({**a, "puzzle_emb": a["puzzle_emb"][:, :4].contiguous()}, str(f), metadata=header)
    with pytest.raises(RecurError, match="do not fit the model"):
        recur.load(f)


def test_the_finite_check_sees_a_nan_past_its_first_slice():
    """checkpoint.finite checks a big tensor in slices (a whole-tensor isfinite of an ARC table is 3 GB of
    temporaries); a NaN anywhere still counts."""
    t = torch.zeros((1 << 24) + 3)
    assert finite(t)
    t[-1] = float("nan")
    assert not finite(t)
    assert finite(torch.arange(3))
