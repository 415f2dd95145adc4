import pytest
import torch

from recur.config import ModelConfig


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _float32_cpu():
    """precision=auto picks float32 on every CPU during tests, so results do not depend on the CI machine's
    bfloat16 support (tests that want bfloat16 ask for it; subprocesses get train.precision=float32)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("recur.dist.cpu_has_bf16", lambda: False)
        yield


def tiny_model_cfg(**kw) -> ModelConfig:
    base = dict(hidden=32, heads=4, layers=2, T=3, n=2, prefix_len=2, puzzle_emb_dim=16)
    base.update(kw)
    return ModelConfig(**base)


INFO = {"vocab_size": 6, "seq_len": 16, "num_puzzle_ids": 3, "size": 4}


def assert_one_line_error(capsys, rc: int, *needles: str) -> str:
    """The CLI answered a user mistake with exit status 2 and one `recur: error:` line holding every needle."""
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("recur: error: "), err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


def load_exactly(model, mapped: dict) -> None:
    """A converted state dict has exactly the model's keys and shapes; load it strictly."""
    own = model.state_dict()
    assert mapped.keys() == own.keys()
    for k, v in mapped.items():
        assert v.shape == own[k].shape, k
    model.load_state_dict(mapped)  # strict: every recur tensor comes from the reference


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory):
    """A finished `micro` run (seconds to train) with its dataset, shared by the report tests; treat it as read-only."""
    from recur.cli import main

    root = tmp_path_factory.mktemp("micro")
    assert main(["train", "micro", f"train.out_dir={root}", "train.run_name=run", f"data.dir={root / 'data'}",
                 "eval.show=0"]) == 0
    return root / "run"
