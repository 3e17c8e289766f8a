"""The one lock-file implementation: `O_CREAT|O_EXCL` files holding "host pid time", with one stale rule.

A lock is stale, and the next taker breaks it, when
  * its holder was a process on this host that no longer runs, or
  * it is empty or unreadable and older than PARTIAL_AFTER seconds (a holder dies between create and write), or
  * `stale_after` is given and the lock is older than that (holders on other hosts of a shared directory,
    whose liveness cannot be checked).
Breaking moves the lock aside with one rename, so of two breakers only one wins, and gives it back if a live
taker had replaced it in the meantime.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator

from ..errors import LockTimeout

HOST = socket.gethostname()
PARTIAL_AFTER = 10.0


def pid_alive(pid: int) -> bool:
    """Is a process with this id running on this host (lock files name their holder)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_owner(path: str | os.PathLike) -> str:
    """The holder a lock file names ("host pid time"), for error messages."""
    try:
        with open(path, "rb") as f:
            return f.read(200).decode("utf-8", "replace").strip() or "owner unknown"
    except OSError:
        return "owner unknown"


def is_stale(path: str | os.PathLike, stale_after: float | None) -> bool | None:
    """The stale rule of the module docstring; None when the lock is already gone."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    age = time.time() - st.st_mtime
    if stale_after is not None and age > stale_after:
        return True
    owner = lock_owner(path).split()
    if len(owner) >= 2 and owner[1].isdigit():
        return owner[0] == HOST and not pid_alive(int(owner[1]))
    return age > PARTIAL_AFTER


def break_if_stale(path: str, aside_dir: str, stale_after: float | None) -> bool:
    """Remove `path` if it is stale; True when the lock is gone (broken here or released meanwhile)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return True
    stale = is_stale(path, stale_after)
    if stale is None:
        return True
    if not stale:
        return False
    os.makedirs(aside_dir, exist_ok=True)
    aside = os.path.join(aside_dir, f"stale-lock-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True
    try:
        st2 = os.stat(aside)
        if (st2.st_ino, st2.st_mtime_ns) != (st.st_ino, st.st_mtime_ns):
            try:  # a live taker's fresh lock: give it back
                os.link(aside, path)
            except OSError:
                pass
    finally:
        _unlink_quiet(aside)
    return True


@contextmanager
def hold(path: str | os.PathLike, *, timeout: float, aside_dir: str | os.PathLike,
         busy: Callable[[str], Exception], stale_after: float | None = None) -> Iterator[None]:
    """Hold the lock file `path` for the block; wait up to `timeout` s for a live holder, then raise
    `busy(owner)`. Stale locks are broken (moved into `aside_dir`, which must be on the same filesystem)."""
    path, aside_dir = os.fspath(path), os.fspath(aside_dir)
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if break_if_stale(path, aside_dir, stale_after):
                continue
            if time.monotonic() >= deadline:
                raise busy(lock_owner(path)) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
            continue
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            continue
        try:
            os.write(fd, f"{HOST} {os.getpid()} {time.time():.3f}\n".encode())
        finally:
            os.close(fd)
        break
    try:
        yield
    finally:
        _unlink_quiet(path)


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


LOCK_WAIT = float(os.environ.get("CKSTORE_LOCK_WAIT", "30"))


def file_lock(path: str | os.PathLike, wait: float | None = None) -> ContextManager[None]:
    """A local repository's lock (a ref, the audit log, the remotes file): waits up to `wait` seconds
    (default CKSTORE_LOCK_WAIT, 30) for a live holder, then raises LockTimeout."""
    def busy(owner: str) -> LockTimeout:
        return LockTimeout(f"{os.fspath(path)} is held by another process ({owner})",
                           hint="wait for it to finish; a lock left by a crashed ckstore on this host is broken "
                                "by the next command")
    return hold(path, timeout=LOCK_WAIT if wait is None else wait, aside_dir=os.path.dirname(os.fspath(path)),
                busy=busy)
