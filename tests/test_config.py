import dataclasses
import typing

import pytest
import torch

from recur.config import RunConfig, describe, field_docs, list_presets, load_config, override
from recur.errors import RecurError
from recur.models import build_model


def _all_config_classes(cls=RunConfig):
    yield cls
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _all_config_classes(hints[f.name])


def test_every_field_has_a_docstring():
    for cls in _all_config_classes():
        docs = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert not missing, f"{cls.__name__} fields without a docstring: {missing}"


def test_overrides_are_typed():
    cfg = load_config(None, ["model.hidden=128", "optim.lr=3e-4", "optim.ema=false", "optim.betas=0.8,0.9",
                             "model.mixer=mlp_t", "data.sudoku.size=6", "train.steps=1_000"])
    assert cfg.model.hidden == 128 and cfg.optim.lr == 3e-4 and cfg.optim.ema is False
    assert cfg.optim.betas == (0.8, 0.9) and cfg.model.mixer == "mlp_t" and cfg.data.sudoku.size == 6
    assert cfg.train.steps == 1000


@pytest.mark.parametrize("assignment,needle", [
    ("model.hiden=3", "unknown config key 'model.hiden'"),
    ("model.hiden=3", "did you mean 'model.hidden'"),
    ("modle.hidden=3", "unknown config key 'modle'"),
    ("model.hidden=abc", "'model.hidden' expects int"),
    ("model.mixer=conv", "one of attention|mlp_t"),
    ("data.sudoku.size=5", "one of 4|6|9"),
    ("optim.ema=maybe", "'optim.ema' expects bool"),
    ("model=3", "'model' is a section"),
    ("model.hidden", "not of the form key=value"),
    ("model.heads=5", "multiple of model.heads"),
])
def test_bad_settings_name_the_key(assignment, needle):
    with pytest.raises(RecurError) as e:
        load_config(None, [assignment])
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_unknown_preset_suggests_a_name():
    with pytest.raises(RecurError, match="did you mean 'quickstart'"):
        load_config("quikstart")


def test_override_merges_into_sections():
    d = override({"model": {"hidden": 64, "T": 2}}, "model.n=3")
    assert d == {"model": {"hidden": 64, "T": 2, "n": "3"}}


@pytest.mark.parametrize("name", sorted(list_presets()))
def test_every_preset_builds_and_runs_a_step(name):
    cfg = load_config(name)
    if cfg.model.arch == "lm":
        info = {"vocab_size": 259, "seq_len": 16, "num_puzzle_ids": 1}
        model = build_model(cfg.model, info)
        out = model(torch.ones(1, info["seq_len"], dtype=torch.long))
    else:
        s = cfg.data.sudoku
        info = {"vocab_size": s.size + 2, "seq_len": s.size * s.size, "num_puzzle_ids": 1}
        model = build_model(cfg.model, info)
        state, out = model(model.init_state(1), torch.ones(1, info["seq_len"], dtype=torch.long),
                           torch.zeros(1, dtype=torch.long), torch.ones(1, dtype=torch.int32))
    assert out.logits.shape == (1, info["seq_len"], info["vocab_size"])
    assert list_presets()[name], f"preset {name} has no description"


def test_describe_lists_every_leaf_key():
    keys = {k for k, _, _ in describe()}
    assert {"model.hidden", "recursion.n_sup", "data.sudoku.size", "train.steps", "optim.lr"} <= keys


def test_presets_can_extend_each_other(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text('description = "b"\n[model]\nhidden = 96\nT = 2\n')
    child = tmp_path / "child.toml"
    child.write_text(f'description = "c"\nextends = "{base}"\n[model]\nT = 4\n')
    cfg = load_config(str(child), ["model.n=3"])
    assert (cfg.model.hidden, cfg.model.T, cfg.model.n) == (96, 4, 3)
    base.write_text(f'extends = "{child}"\n')
    with pytest.raises(RecurError, match="loop"):
        load_config(str(child))
    nq = load_config("nqueens-cpu")
    assert nq.data.task == "nqueens" and nq.model.hidden == load_config("quickstart").model.hidden


def test_each_task_owns_its_config_section_and_checks_it_at_load():
    """data.<task> is the task's own settings class (a new task is one file plus its registry entry), and its
    check() runs when the config is loaded, before any data is built."""
    from recur.config import DataConfig
    from recur.tasks import REGISTRY

    hints = typing.get_type_hints(DataConfig)
    assert typing.get_args(hints["task"]) == tuple(REGISTRY)
    for name, task in REGISTRY.items():
        assert hints[name] is task.config and callable(task.config.check)
    for name, bad, needle in [("sudoku", "train_size=-1", "data.sudoku.train_size"),
                              ("maze", "wall_max=1.5", "wall"), ("nqueens", "max_given=9", "max_given"),
                              ("sorting", "values=300", "data.sorting.values")]:
        with pytest.raises(RecurError, match=needle):
            load_config(None, [f"data.task={name}", f"data.{name}.{bad}"])
    load_config(None, ["data.task=maze", "data.sudoku.train_size=-1"])  # an unused task's section is not checked
