"""One writer per run directory: an advisory lock on <run>/.lock.

Training, resuming and every command that writes into a run take the lock; a second one is refused
with one line naming the process that holds it. The lock is an flock(2) on the file, so the kernel
releases it when its process ends, however it ends (Ctrl-C, kill -9, a crash): a lock left by a dead
process is free again, and the file only tells who holds it now.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from .errors import RecurError

LOCK_FILE = ".lock"


class RunLock:
    """Hold the lock on `run_dir` from acquire() (or `with`) until release() or the end of the process."""

    def __init__(self, run_dir: str | Path, purpose: str):
        self.path = Path(run_dir) / LOCK_FILE
        self.purpose = purpose
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RecurError(f"cannot {self.purpose} {self.path.parent}: the run directory is not writable "
                             f"({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            who = (f"process {holder.get('pid')} on {holder.get('host')} ({holder.get('purpose')}, since "
                   f"{holder.get('since')})") if holder else "another process"
            raise RecurError(f"{self.path.parent} is in use by {who}; wait for it to finish or stop it") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv[:3])}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # the file stays (removing it would race a process opening it now)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
