"""Refs moved by compare-and-swap under lock files, and HEAD; every change goes to the audit log first."""

from __future__ import annotations

import errno
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..errors import ChangeNotDurable, CorruptObject, DamagedRef, RefConflict, UsageError
from ..fs.fileio import NotDurable, fsync_dir, write_atomic
from ..fs.locks import file_lock
from ..model.crypto import PLAIN, Scheme
from ..model.refnames import check_ref_name
from .audit import AuditLog

ANY = object()  # expected value for an unconditional update

SetRef = Callable[..., None]  # set(new, action, message="")


class RefStore:
    """The refs/ tree and HEAD of one repository directory."""

    def __init__(self, root: Path, scheme: Scheme = PLAIN) -> None:
        self.root, self.tmp = root, root / "tmp"
        self.scheme = scheme  # an encrypted repository's refs are sealed, each with its sequence number
        self.audit = AuditLog(root / "logs" / "audit", refs=lambda: self.list(errors=[]))

    def _path(self, name: str) -> Path:
        return self.root / check_ref_name(name)

    def read(self, name: str) -> bytes | None:
        """The id `name` holds, None if there is no such ref; DamagedRef if its file does not hold an id."""
        got = self.read_seq(name)
        return None if got is None else got[0]

    def read_seq(self, name: str) -> tuple[bytes, int] | None:
        """(id, sequence number) of `name` (the number is 0 in a plain repository), None if there is none."""
        try:
            data = self._path(name).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        return parse_ref(name, data, self.scheme)

    def head(self) -> str:
        """The ref HEAD names (refs/heads/BRANCH)."""
        try:
            data = (self.root / "HEAD").read_bytes()
        except FileNotFoundError:
            raise DamagedRef("HEAD", "the file is missing") from None
        try:
            text = data.decode("utf-8").strip()
            if not text.startswith("ref: "):
                raise ValueError
            return check_ref_name(text[5:])
        except (ValueError, UsageError):  # UnicodeDecodeError is a ValueError
            raise DamagedRef("HEAD", f"{data[:80]!r} does not name a branch",
                             hint="repair it with `ckstore switch BRANCH`") from None

    def set_head(self, ref: str) -> None:
        """Point HEAD at `ref`."""
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
                    except (DamagedRef, UsageError) as exc:
                        if errors is None:
                            raise
                        errors.append((name, str(exc)))
                        continue
                    if value:
                        out[name] = value
        return out

    def update(self, name: str, new: bytes | None, expected: bytes | None | object, *, action: str,
               message: str = "") -> None:
        """Set (or delete, with new=None) `name` if it currently equals `expected` (ANY: unconditionally);
        RefConflict otherwise. Audited."""
        with self.locked(name) as (current, set_ref):
            if expected is not ANY and current != expected:
                raise RefConflict(name, expected.hex() if expected else None, current.hex() if current else None)
            set_ref(new, action, message)

    @contextmanager
    def locked(self, name: str) -> Iterator[tuple[bytes | None, SetRef]]:
        """Hold a ref's lock: yields (current value, set(new, action, message)) for read-decide-write."""
        path = self._path(name)
        with file_lock(path.with_name(path.name + ".lock")):
            got = self.read_seq(name)
            current, seq = got if got is not None else (None, 0)

            def set_value(new: bytes | None, action: str, message: str = "") -> None:
                self.audit.append(action, name, current, new, message)  # the intent first: no unaudited change
                self._write(path, None if new is None else self.scheme.ref_bytes(name, new, next_seq(seq)))

            yield current, set_value

    def _write(self, path: Path, new: bytes | None) -> None:
        """Write a ref file's bytes (None: delete it)."""
        if new is None:
            try:
                path.unlink()
                fsync_dir(path.parent)
            except FileNotFoundError:
                pass
            return
        self.tmp.mkdir(parents=True, exist_ok=True)
        try:
            write_atomic(path, new, self.tmp)
        except NotDurable as exc:
            raise ChangeNotDurable(f"{path.relative_to(self.root)} was moved, but its directory "
                                   f"could not be synced ({exc.strerror}): the change is made but may not survive a "
                                   "power loss") from None
        except NotADirectoryError:
            raise UsageError(f"cannot create {path.relative_to(self.root)}: a ref is in the way") from None
        except OSError as exc:
            if exc.errno == errno.EISDIR:
                raise UsageError(f"cannot create {path.relative_to(self.root)}: refs exist below it") from None
            raise


def next_seq(seq: int) -> int:
    """The sequence number of a ref's next value: above the current one, and above the clock in nanoseconds,
    so a ref deleted and made again still counts up past what clones saw of it."""
    return max(seq + 1, time.time_ns())


def parse_ref(name: str, data: bytes, scheme: Scheme = PLAIN) -> tuple[bytes, int]:
    """(id, sequence number) a ref file holds: 64 hex digits and a newline, or a sealed ref in an encrypted
    repository; DamagedRef for anything else (a sealed ref that does not open as `name`'s included)."""
    try:
        got = scheme.ref_value(name, data)
    except CorruptObject as exc:
        raise DamagedRef(name, f"does not open as this ref: {exc.detail}") from None
    if got is None:
        what = "a sealed ref" if scheme.encrypted else "a 64-digit id"
        raise DamagedRef(name, f"holds {data[:80]!r}, not {what}")
    return got
