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
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise RecurError(f"cannot append to {self.path}: {e.strerror}") from None
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
        keep = [json.dumps(r) for r in read_metrics(self.path.parent) if r.get("step", 0) <= step]
        try:
            self.path.write_text("".join(ln + "\n" for ln in keep))
        except OSError as e:
            raise RecurError(f"cannot rewrite {self.path}: {e.strerror}") from None


def read_metrics(run_dir: Path, problems: list[str] | None = None) -> list[dict]:
    """The records of <run>/metrics.jsonl. A last line cut off mid-record (a process killed while writing it) is
    dropped and described in `problems`; a damaged line before the last is a RecurError naming it."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise RecurError(f"cannot read {path}: {e.strerror}") from None
    numbered = [(i, ln) for i, ln in enumerate(lines, 1) if ln.strip()]
    records = []
    for i, line in numbered:
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a record")
            records.append(record)
        except ValueError:
            if i != numbered[-1][0]:
                raise RecurError(f"{path} line {i} is not a metrics record (the file is damaged)") from None
            if problems is not None:
                problems.append(f"{path} line {i} is cut off mid-record and was ignored")
    return records
