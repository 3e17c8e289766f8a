"""The audit log: one hash-chained JSON line per ref change (who, when, old, new, why), appended under a lock."""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from pathlib import Path
from typing import Callable

import blake3

from ..errors import DamagedRef
from ..fs.fileio import fsync_dir, io_step, makedirs
from ..fs.locks import file_lock
from ..results import AuditEntry
from .signing import Signer

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


def signed_text(seq: int, h: str) -> str:
    """What an audit entry's signature covers: its place and its hash (which covers its body and the chain)."""
    return f"ckstore audit {seq} {h}"


def entry_hash(body: dict) -> str:
    """BLAKE3 of an entry's canonical JSON."""
    return blake3.blake3(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class AuditLog:
    """The append-only, hash-chained log at `path`."""

    def __init__(self, path: Path, refs: Callable[[], dict[str, bytes]] | None = None) -> None:
        self.path = path
        self.refs = refs  # the repository's refs, to tell an unfinished append from a damaged entry
        self.signer: Signer | None = None  # set from the config: every new entry is then signed

    def _last(self) -> tuple[int, str, int]:
        """(seq, hash) of the last complete entry, and where the log's complete lines end. Bytes after the last
        newline are an append a crash cut off: its fsync never returned, so the ref change it began never
        happened (refs move only after it), and the next append removes them."""
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - 65536))
                tail = f.read()
                if size > 65536 and tail.count(b"\n") < 2:
                    f.seek(0)
                    tail = f.read()
        except FileNotFoundError:
            return 0, GENESIS, 0
        end = size - (len(tail) - tail.rfind(b"\n") - 1)  # 0 when no line is complete (tail is then the whole file)
        lines = tail[: len(tail) - (size - end)].rstrip(b"\n").split(b"\n")
        if not lines or not lines[-1]:
            return 0, GENESIS, end
        try:
            last = json.loads(lines[-1])
            seq, h = last["seq"], last["hash"]
        except (ValueError, KeyError, TypeError):
            raise DamagedRef("audit log", "its last entry does not parse",
                             hint="run `ckstore fsck`; no ref can move until the log is repaired") from None
        if not isinstance(seq, int) or not isinstance(h, str):
            raise DamagedRef("audit log", "its last entry does not parse")
        return seq, h, end

    def append(self, action: str, ref: str, old: bytes | None, new: bytes | None, message: str) -> AuditEntry:
        """Append an entry chained to the last one (under the log's lock, fsynced) and return it."""
        with file_lock(self.path.with_suffix(".lock")):
            seq, prev, end = self._last()
            body = {"seq": seq + 1, "time": time.time(), "user": whoami(), "host": socket.gethostname(),
                    "pid": os.getpid(), "action": action, "ref": ref, "old": old.hex() if old else None,
                    "new": new.hex() if new else None, "message": message, "prev": prev}
            h = entry_hash(body)
            signed = {"sig": self.signer.sign(signed_text(body["seq"], h)),
                      "signer": self.signer.principal} if self.signer else {}
            entry = AuditEntry(**body, hash=h, **signed)
            line = json.dumps({**body, "hash": h, **signed}, sort_keys=True, separators=(",", ":")) + "\n"
            makedirs(self.path.parent)
            new = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size > end:  # a torn append's bytes: cut them off first
                    self._check_unfinished()
                    os.ftruncate(fd, end)
                os.write(fd, line.encode())
                io_step()
                os.fsync(fd)
            finally:
                os.close(fd)
            if new:  # the log's own name must survive a power loss too
                fsync_dir(self.path.parent)
            return entry

    def _damaged_tail(self) -> str | None:
        """Why the bytes after the last newline are not an append that never finished (None if they can be).
        They can be only if no ref holds a value that only they could record; a ref that does means a whole
        entry was damaged, and cutting it off would destroy the record. Without the refs, nobody can tell."""
        if self.refs is None:
            return "the refs are unknown"
        recorded = {(e.ref, v) for e in self.entries() for v in (e.old, e.new)}
        for name, oid in self.refs().items():
            if (name, oid.hex()) not in recorded:
                return f"{name} holds a value no whole entry records"
        return None

    def _check_unfinished(self) -> None:
        why = self._damaged_tail()
        if why is not None:
            raise DamagedRef("audit log", f"its last entry is cut off, and {why}",
                             hint="run `ckstore fsck`; no ref can move until the log is repaired")

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
        # lines[-1] is "" or bytes after the last newline: an append cut off by a crash before its fsync returned
        # (its ref never moved, and the next append removes it) is no problem; a whole entry cut short is
        if lines and lines[-1] != "" and self._damaged_tail() is not None:
            problems.append("audit log: last entry is truncated")
        for n, line in enumerate(filter(None, lines[:-1]), 1):  # lines[-1] is "" or the truncated entry
            try:
                raw = json.loads(line)
                h = raw.pop("hash")
                raw.pop("sig", None)  # outside the hash: signatures are checked by verify_signatures
                raw.pop("signer", None)
            except (ValueError, KeyError, AttributeError):
                problems.append(f"audit log line {n}: not an entry")
                continue
            if raw.get("prev") != prev or raw.get("seq") != seq + 1:
                problems.append(f"audit log line {n}: chain broken (entry missing, reordered or inserted)")
            if entry_hash(raw) != h:
                problems.append(f"audit log line {n}: entry was altered")
            prev, seq = h, raw.get("seq", seq + 1)
        return problems


