"""The audit log: one hash-chained JSON line per ref change (who, when, old, new, why), appended under a lock."""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from pathlib import Path

import blake3

from ..errors import DamagedRef
from ..fs.fileio import io_step
from ..fs.locks import file_lock
from ..results import AuditEntry

GENESIS = "0" * 64


def whoami() -> str:
    """The author recorded in commits and audit entries: CKSTORE_AUTHOR, else user@host."""
    name = os.environ.get("CKSTORE_AUTHOR")
    if name:
        return name
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def entry_hash(body: dict) -> str:
    """BLAKE3 of an entry's canonical JSON."""
    return blake3.blake3(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class AuditLog:
    """The append-only, hash-chained log at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _last(self) -> tuple[int, str]:
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - 65536))
                tail = f.read()
                if size > 65536 and tail.count(b"\n") < 2:
                    f.seek(0)
                    tail = f.read()
        except FileNotFoundError:
            return 0, GENESIS
        lines = tail.rstrip(b"\n").split(b"\n")
        if not lines or not lines[-1]:
            return 0, GENESIS
        try:
            last = json.loads(lines[-1])
            seq, h = last["seq"], last["hash"]
        except (ValueError, KeyError, TypeError):
            raise DamagedRef("audit log", "its last entry does not parse",
                             hint="run `ckstore fsck`; no ref can move until the log is repaired") from None
        if not isinstance(seq, int) or not isinstance(h, str):
            raise DamagedRef("audit log", "its last entry does not parse")
        return seq, h

    def append(self, action: str, ref: str, old: bytes | None, new: bytes | None, message: str) -> AuditEntry:
        """Append an entry chained to the last one (under the log's lock, fsynced) and return it."""
        with file_lock(self.path.with_suffix(".lock")):
            seq, prev = self._last()
            body = {"seq": seq + 1, "time": time.time(), "user": whoami(), "host": socket.gethostname(),
                    "pid": os.getpid(), "action": action, "ref": ref, "old": old.hex() if old else None,
                    "new": new.hex() if new else None, "message": message, "prev": prev}
            entry = AuditEntry(**body, hash=entry_hash(body))
            line = json.dumps({**body, "hash": entry.hash}, sort_keys=True, separators=(",", ":")) + "\n"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
                io_step()
                os.fsync(fd)
            finally:
                os.close(fd)
            return entry

    def entries(self) -> list[AuditEntry]:
        """The readable entries (verify() reports the rest)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        for line in data.splitlines():
            try:
                out.append(AuditEntry(**json.loads(line.decode("utf-8"))))
            except (ValueError, TypeError):  # UnicodeDecodeError is a ValueError
                continue
        return out

    def verify(self) -> list[str]:
        """Problems in the chain: edited, reordered, removed or truncated entries."""
        problems, prev, seq = [], GENESIS, 0
        try:
            lines = self.path.read_bytes().decode("utf-8", "replace").split("\n")
        except FileNotFoundError:
            return []
        if lines and lines[-1] != "":
            problems.append("audit log: last entry is truncated")
        for n, line in enumerate(filter(None, lines[:-1]), 1):  # lines[-1] is "" or the truncated entry
            try:
                raw = json.loads(line)
                h = raw.pop("hash")
            except (ValueError, KeyError, AttributeError):
                problems.append(f"audit log line {n}: not an entry")
                continue
            if raw.get("prev") != prev or raw.get("seq") != seq + 1:
                problems.append(f"audit log line {n}: chain broken (entry missing, reordered or inserted)")
            if entry_hash(raw) != h:
                problems.append(f"audit log line {n}: entry was altered")
            prev, seq = h, raw.get("seq", seq + 1)
        return problems


