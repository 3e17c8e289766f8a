"""Refs moved by compare-and-swap under lock files, HEAD, and the hash-chained audit log of every change."""

from __future__ import annotations

import errno
import getpass
import json
import os
import re
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import blake3

from .errors import LockTimeout, RefConflict, UsageError
from .store.fileio import fsync_dir, io_step, pid_alive, write_atomic

_BAD_REF = re.compile(r"(^|/)\.|\.\.|[\x00-\x20\x7f~^:?*\[\\]|@\{|\.lock(/|$)|//|/$|^/|^$")
GENESIS = "0" * 64
LOCK_WAIT = float(os.environ.get("CKSTORE_LOCK_WAIT", "30"))


def check_ref_name(name: str) -> str:
    """Refuse names git would refuse (and anything that could escape refs/)."""
    if _BAD_REF.search(name) or len(name) > 200:
        raise UsageError(f"invalid ref name {name!r}", hint="use letters, digits, '-', '_', '.', and '/' between parts")
    return name


def whoami() -> str:
    name = os.environ.get("CKSTORE_AUTHOR")
    if name:
        return name
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@contextmanager
def file_lock(path: Path, wait: float | None = None) -> Iterator[None]:
    """An O_CREAT|O_EXCL lock file holding "pid host"; a lock left by a dead process on this host is broken."""
    deadline = time.monotonic() + (LOCK_WAIT if wait is None else wait)
    host = socket.gethostname()
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            if _stale(path, host):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                continue
            if time.monotonic() > deadline:
                raise LockTimeout(f"{path} is held by another process",
                                  hint="wait for it to finish; if no ckstore is running, delete the lock file") from None
            time.sleep(0.005)
    try:
        os.write(fd, f"{os.getpid()} {host}\n".encode())
        os.close(fd)
        yield
    finally:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _stale(path: Path, host: str) -> bool:
    try:
        pid_s, lock_host = path.read_text().split()
        return lock_host == host and not pid_alive(int(pid_s))
    except FileNotFoundError:
        return False
    except (ValueError, OSError):
        # Empty or partial: the holder may be between create and write; stale only once it is old.
        try:
            return time.time() - path.stat().st_mtime > 10
        except FileNotFoundError:
            return False


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    time: float
    user: str
    host: str
    pid: int
    action: str
    ref: str
    old: str | None
    new: str | None
    message: str
    prev: str
    hash: str

    def body(self) -> dict:
        d = {k: getattr(self, k) for k in self.__slots__}
        del d["hash"]
        return d


def entry_hash(body: dict) -> str:
    return blake3.blake3(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class AuditLog:
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
        last = json.loads(lines[-1])
        return last["seq"], last["hash"]

    def append(self, action: str, ref: str, old: bytes | None, new: bytes | None, message: str) -> AuditEntry:
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
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(AuditEntry(**json.loads(line)))
            except (ValueError, TypeError):
                continue
        return out

    def verify(self) -> list[str]:
        """Problems in the chain: edited, reordered, removed or truncated entries."""
        problems, prev, seq = [], GENESIS, 0
        try:
            lines = self.path.read_text().split("\n")
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


ANY = object()  # expected value for an unconditional update


class RefStore:
    def __init__(self, root: Path) -> None:
        self.root, self.tmp = root, root / "tmp"
        self.audit = AuditLog(root / "logs" / "audit")

    def _path(self, name: str) -> Path:
        return self.root / check_ref_name(name)

    def read(self, name: str) -> bytes | None:
        try:
            text = self._path(name).read_text().strip()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        try:
            value = bytes.fromhex(text)
        except ValueError:
            value = b""
        if len(value) != 32:
            raise RefConflict(name, "a 64-digit id", repr(text[:80]), hint="the ref file is damaged; fsck reports it")
        return value

    def head(self) -> str:
        text = (self.root / "HEAD").read_text().strip()
        if not text.startswith("ref: "):
            raise UsageError(f"HEAD is damaged: {text[:80]!r}")
        return text[5:]

    def set_head(self, ref: str) -> None:
        write_atomic(self.root / "HEAD", f"ref: {check_ref_name(ref)}\n".encode(), self.tmp)

    def list(self, prefix: str = "refs/", errors: list[tuple[str, str]] | None = None) -> dict[str, bytes]:
        """Refs under `prefix`. A damaged ref raises, or is reported into `errors` when a list is given (fsck)."""
        base = self.root / prefix
        out: dict[str, bytes] = {}
        if base.is_dir():
            for p in sorted(base.rglob("*")):
                if p.is_file() and not p.name.endswith((".lock", ".tmp")):
                    name = p.relative_to(self.root).as_posix()
                    try:
                        value = self.read(name)
                    except (RefConflict, UsageError) as exc:
                        if errors is None:
                            raise
                        errors.append((name, str(exc)))
                        continue
                    if value:
                        out[name] = value
        return out

    def update(self, name: str, new: bytes | None, expected: bytes | None | object, *, action: str,
               message: str = "") -> None:
        """Set (or delete, with new=None) `name` if it currently equals `expected`; audited."""
        path = self._path(name)
        with file_lock(path.with_name(path.name + ".lock")):
            current = self.read(name)
            if expected is not ANY and current != expected:
                raise RefConflict(name, expected.hex() if expected else None, current.hex() if current else None)
            self.audit.append(action, name, current, new, message)  # the intent first: no unaudited change
            self._write(path, new)

    @contextmanager
    def locked(self, name: str) -> Iterator[tuple[bytes | None, callable]]:
        """Hold a ref's lock: yields (current value, set(new, action, message)) for read-decide-write."""
        path = self._path(name)
        with file_lock(path.with_name(path.name + ".lock")):
            current = self.read(name)

            def set_value(new: bytes | None, action: str, message: str = "") -> None:
                self.audit.append(action, name, current, new, message)
                self._write(path, new)

            yield current, set_value

    def _write(self, path: Path, new: bytes | None) -> None:
        if new is None:
            try:
                path.unlink()
                fsync_dir(path.parent)
            except FileNotFoundError:
                pass
            return
        self.tmp.mkdir(parents=True, exist_ok=True)
        try:
            write_atomic(path, (new.hex() + "\n").encode(), self.tmp)
        except NotADirectoryError:
            raise UsageError(f"cannot create {path.relative_to(self.root)}: a ref is in the way") from None
        except OSError as exc:
            if exc.errno == errno.EISDIR:
                raise UsageError(f"cannot create {path.relative_to(self.root)}: refs exist below it") from None
            raise
