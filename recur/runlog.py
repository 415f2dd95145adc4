"""Run records: metrics.jsonl (always), TensorBoard (optional), and the console."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import RecurError


def require_tensorboard():
    """TensorBoard's SummaryWriter, or a RecurError saying how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise RecurError("train.tensorboard=true needs the tensorboard package: "
                         "pip install 'recur[tensorboard]'") from None
    return SummaryWriter


class RunLog:
    """Appends one JSON object per record to <run>/metrics.jsonl; mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool = False, enabled: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if enabled and tensorboard:
            self.tb = require_tensorboard()(str(Path(run_dir) / "tensorboard"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            prefix = record.get("kind", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(f"{prefix}/{k}", v, record["step"])
            self.tb.flush()

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (a resumed run rewrites what the killed one logged after its checkpoint)."""
        if not self.enabled or not self.path.exists():
            return
        lines = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
        keep = [ln for ln in lines if json.loads(ln).get("step", 0) <= step]
        self.path.write_text("".join(ln + "\n" for ln in keep))


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
