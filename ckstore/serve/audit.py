"""The served root's audit log: one JSON line per write request (PUT, DELETE), allowed or not, fsync'd.

    {"time": 1718000000.5, "token": "ci", "addr": "10.0.0.7", "repo": "team", "op": "put",
     "key": "refs/heads/main", "size": 65, "result": 200, "detail": "ok"}

`result` is the HTTP status the request got; `detail` says why when it was refused. Lines are appended with
O_APPEND under a lock, each written whole by one write(2), then fsync'd before the reply goes out: a write the
client saw succeed is in the log.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

AUDIT = "audit.jsonl"


class AuditLog:
    """Append-only JSON lines at `<state>/audit.jsonl`."""

    def __init__(self, state: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = state / AUDIT
        self.clock = clock
        self._lock = threading.Lock()

    def append(self, **entry: Any) -> None:
        """Write one entry (its time added) durably."""
        line = (json.dumps({"time": round(self.clock(), 6), **entry}, sort_keys=True) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)


def read_audit(state: Path) -> Iterator[dict]:
    """The entries of the audit log in order; a line that does not parse (a torn last line) is skipped."""
    try:
        f = open(state / AUDIT, "rb")
    except FileNotFoundError:
        return
    with f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                yield entry
