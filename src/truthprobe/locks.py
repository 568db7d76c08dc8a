"""Advisory locks that say who holds them: one writer per cache file, one run per run directory.

A lock is `flock` on a small file beside what it guards (`<cache>.lock`, `<run>/.lock`), which
holds the holder's pid, start time and command. The kernel drops an flock when its process
ends, however it ends (a SIGKILL included), so a lock is never left behind by a dead process
and nobody is ever told to delete anything: a second writer or reader is told who is working
and to wait, or to use another path.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from truthprobe.errors import TruthprobeError


class InUseError(TruthprobeError, RuntimeError):
    """Another process holds the lock; the message names it and what to do."""


class Lock:
    """An exclusive, non-blocking advisory lock on `path` (created if missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, what: str, advice: str) -> Lock:
        """Take the lock or raise `InUseError`: "<what> is in use by process N ... <advice>"."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InUseError(
                f"{what} is in use by {describe(holder(self.path))}; {advice}"
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(path: str | Path) -> dict[str, Any] | None:
    """Who holds the lock at `path` (None if nobody does)."""
    path = Path(path)
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                return {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process"
    where = f" on {info['host']}" if info.get("host") != socket.gethostname() else ""
    return f"process {info.get('pid')}{where} since {info.get('since')} (`{info.get('command')}`)"
