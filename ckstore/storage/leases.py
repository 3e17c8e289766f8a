"""Writer leases and the sweep lock: what keeps gc from deleting data a running command is about to need.

Every writer (commit, revert, fetch, pull, clone, repair, repack) holds a lease file `locks/lease-*` while it runs;
a background thread renews it. gc's sweep holds `locks/sweep`. The two sides each write first and read second:

  writer: create its lease, then look for `locks/sweep`; if a sweep is live, drop the lease and wait;
  gc:     create `locks/sweep`, then look for leases; while one is live, wait (or give up and refuse).

Whichever side writes second sees the other's file, so a sweep never runs while a writer does. A lease is stale
by the one rule of `fs.locks` (a dead process on this host; for other hosts of a shared directory, not renewed
for LEASE_TTL seconds).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import LockTimeout
from ..fs.locks import HOST, LOCK_WAIT, break_if_stale, hold, is_stale, lock_owner

LEASE_TTL = 600.0
RENEW_EVERY = 60.0
SWEEP, GC = "sweep", "gc"


@dataclass(frozen=True)
class LeaseInfo:
    """A live writer's lease: its file, and the "host pid time what" it holds."""

    path: str
    owner: str


class Leases:
    """The leases and gc locks in a repository's `locks/` directory."""

    def __init__(self, locks_dir: Path) -> None:
        self.dir = locks_dir
        self._depth = 0
        self._mine: str | None = None
        self._lock = threading.Lock()

    # -- writers ------------------------------------------------------------------------------------------------

    @contextmanager
    def writer(self, what: str, wait: float | None = None) -> Iterator[None]:
        """Hold a writer lease for the block (re-entrant within a process: a pull's commit inside its fetch).
        Waits up to `wait` s (default CKSTORE_LOCK_WAIT) while a gc sweep runs, then raises LockTimeout."""
        with self._lock:
            self._depth += 1
            outer = self._depth == 1
        try:
            if outer:
                self._mine = self._acquire(what, LOCK_WAIT if wait is None else wait)
                renew = _Renewer(self._mine)
            try:
                yield
            finally:
                if outer:
                    renew.stop()
                    _unlink(self._mine)
                    self._mine = None
        finally:
            with self._lock:
                self._depth -= 1

    def _acquire(self, what: str, wait: float) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        deadline, delay = time.monotonic() + wait, 0.005
        while True:
            path = str(self.dir / f"lease-{uuid.uuid4().hex}")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, f"{HOST} {os.getpid()} {time.time():.3f} {what}\n".encode())
            finally:
                os.close(fd)
            sweep = str(self.dir / SWEEP)
            if not os.path.exists(sweep) or break_if_stale(sweep, str(self.dir), None):
                return path
            _unlink(path)  # a sweep is running: step aside until it is done
            if time.monotonic() >= deadline:
                raise LockTimeout(f"gc is sweeping this repository ({lock_owner(sweep)})",
                                  hint="wait for it to finish and run the command again")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def live(self) -> list[LeaseInfo]:
        """The live writer leases (stale ones are removed on the way)."""
        out = []
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
        for name in names:
            if not name.startswith("lease-"):
                continue
            path = str(self.dir / name)
            if path == self._mine:
                continue
            if is_stale(path, LEASE_TTL):
                break_if_stale(path, str(self.dir), LEASE_TTL)
                continue
            if os.path.exists(path):
                out.append(LeaseInfo(path, lock_owner(path)))
        return out

    # -- gc -----------------------------------------------------------------------------------------------------

    def gc(self, wait: float = 0.0) -> object:
        """One gc at a time: hold `locks/gc` for the whole run (LockTimeout if another gc runs)."""
        def busy(owner: str) -> LockTimeout:
            return LockTimeout(f"another gc is running ({owner})", hint="wait for it to finish")
        return hold(self.dir / GC, timeout=wait, aside_dir=self.dir, busy=busy)

    @contextmanager
    def sweep(self, wait: float) -> Iterator[None]:
        """Hold `locks/sweep` with no live writer: new writers wait for the block; writers already running are
        waited for up to `wait` s, then LockTimeout names them and nothing was swept."""
        def busy(owner: str) -> LockTimeout:
            return LockTimeout(f"another sweep is running ({owner})", hint="wait for it to finish")
        with hold(self.dir / SWEEP, timeout=wait, aside_dir=self.dir, busy=busy):
            deadline, delay = time.monotonic() + wait, 0.005
            while True:
                running = self.live()
                if not running:
                    break
                if time.monotonic() >= deadline:
                    names = "; ".join(lease.owner for lease in running[:3])
                    raise LockTimeout(f"{len(running)} writer(s) hold a lease on this repository ({names})",
                                      hint="gc sweeps only when no commit, fetch or repack runs: try again when "
                                           "they are done, or pass --wait SECONDS")
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
            yield


class _Renewer:
    """Touches a lease every RENEW_EVERY seconds, so holders on other hosts are not taken for dead."""

    def __init__(self, path: str) -> None:
        self.path, self.done = path, threading.Event()
        self.thread = threading.Thread(target=self._run, name="ckstore-lease", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(RENEW_EVERY):
            try:
                os.utime(self.path)
            except OSError:
                return

    def stop(self) -> None:
        """Stop renewing (the caller removes the lease)."""
        self.done.set()


def _unlink(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
