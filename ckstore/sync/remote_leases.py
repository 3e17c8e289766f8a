"""Writer leases and the gc lock on a remote: the mirror of `storage.leases`, with keys moved by conditional PUT.

    locks/lease-<uuid>   one per running push (and archive, which pushes): {"host", "pid", "time", "what", "id"}
    locks/gc             the one remote gc (or forget --remote) running: the same fields

Both sides write first and read second:

  pusher: create its lease (if-absent), then read `locks/gc`; if a live gc holds it, release the lease and wait;
  gc:     create `locks/gc` (if-absent), then list the leases; while one is live, wait (or refuse).

Whichever writes second sees the other's key (S3 and directories read their own and others' writes at once), so
a gc never deletes while a push that may dedup against the remote's packs runs. A pusher never deletes: it releases
its lease by overwriting it with `"released": true`, and gc deletes released and stale leases. A key is stale when its holder was
a process on this host that is gone, or when its time is older than LEASE_TTL (CKSTORE_REMOTE_LEASE_TTL, default
600 s; holders renew every RENEW_EVERY). A stale `locks/gc` is taken over by compare-and-swap on its etag (one
taker wins); stale leases are deleted by the gc that finds them. Times are the writers' clocks: hosts sharing a
remote need clocks within a small fraction of the TTL.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass

from ..errors import LockTimeout, RemoteNotFound, RemotePreconditionFailed
from ..fs.locks import HOST, LOCK_WAIT, pid_alive
from .session import Session

LEASE_TTL = float(os.environ.get("CKSTORE_REMOTE_LEASE_TTL", "600") or 600)
RENEW_EVERY = min(60.0, LEASE_TTL / 5)
GC_KEY = "locks/gc"
LEASE_PREFIX = "locks/lease-"
MAX_LEASE = 4096


@dataclass(frozen=True)
class RemoteLeaseInfo:
    """A lease or gc key on a remote: its key and what it says (None when it does not parse)."""

    key: str
    info: dict | None

    @property
    def owner(self) -> str:
        """"host pid time what", for messages."""
        i = self.info or {}
        return f"{i.get('host', '?')} pid {i.get('pid', '?')} since {i.get('time', '?')} ({i.get('what', '?')})"


def _body(what: str, ident: str, released: bool = False) -> bytes:
    body = {"host": HOST, "pid": os.getpid(), "time": time.time(), "what": what, "id": ident}
    if released:
        body["released"] = True
    return json.dumps(body, sort_keys=True).encode()


def _parse(data: bytes | None) -> dict | None:
    if data is None:
        return None
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("time"), (int, float)):
        return None
    return raw


def is_stale(info: dict | None, now: float | None = None) -> bool:
    """True when a lease's holder is gone: a dead process on this host, or not renewed for LEASE_TTL seconds.
    An unreadable lease is not stale (nothing is deleted on a guess); its key is named so a person can remove it."""
    if info is None:
        return False
    if info.get("released") is True:
        return True
    now = time.time() if now is None else now
    if info.get("host") == HOST and isinstance(info.get("pid"), int) and not pid_alive(info["pid"]):
        return True
    return now - float(info["time"]) > LEASE_TTL


def live_leases(remote: Session, *, clean: bool = False) -> list[RemoteLeaseInfo]:
    """The live writer leases on the remote; with `clean`, stale ones are deleted on the way."""
    out = []
    for key in remote.list("locks"):
        if not key.startswith(LEASE_PREFIX):
            continue
        try:
            info = _parse(remote.get_small(key, MAX_LEASE))
        except RemoteNotFound:
            continue
        if info is None and not remote.exists(key):
            continue  # deleted between the list and the read
        if is_stale(info):
            if clean:
                remote.r.delete(key)
            continue
        out.append(RemoteLeaseInfo(key, info))
    return out


def gc_holder(remote: Session) -> RemoteLeaseInfo | None:
    """The live holder of `locks/gc`, or None."""
    data = remote.get_small(GC_KEY, MAX_LEASE)
    if data is None:
        return None
    info = _parse(data)
    return None if is_stale(info) else RemoteLeaseInfo(GC_KEY, info)


class _Renewer:
    """Rewrites a key with a fresh time every RENEW_EVERY seconds while its holder runs."""

    def __init__(self, remote: Session, key: str, what: str, ident: str) -> None:
        self.remote, self.key, self.what, self.ident = remote, key, what, ident
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ckstore-remote-lease", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(RENEW_EVERY):
            try:
                self.remote.r.put(self.key, _body(self.what, self.ident))
            except Exception:  # noqa: BLE001 - a failed renewal is retried at the next tick
                continue

    def stop(self) -> None:
        """Stop renewing (the holder then deletes its key)."""
        self.done.set()
        self.thread.join(timeout=5)


class RemoteLease:
    """A writer's lease on a remote for a `with` block (see the module docstring). Waits up to `wait` seconds
    (default CKSTORE_LOCK_WAIT) while a gc holds the remote, then raises LockTimeout."""

    def __init__(self, remote: Session, what: str, wait: float | None = None) -> None:
        self.remote, self.what = remote, what
        self.wait = LOCK_WAIT if wait is None else wait
        self.key: str | None = None
        self._renew: _Renewer | None = None

    def __enter__(self) -> RemoteLease:
        deadline, delay = time.monotonic() + self.wait, 0.01
        while True:
            ident = uuid.uuid4().hex
            key = LEASE_PREFIX + ident
            self.remote.put_new(key, _body(self.what, ident))
            holder = gc_holder(self.remote)
            if holder is None:
                self.key = key
                self._renew = _Renewer(self.remote, key, self.what, ident)
                return self
            self._release(key, ident)  # a gc is deciding what to delete: step aside until it is done
            if time.monotonic() >= deadline:
                raise LockTimeout(f"a gc is running on the remote {self.remote.url} ({holder.owner})",
                                  hint="wait for it to finish and run the command again")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _release(self, key: str, ident: str) -> None:
        self.remote.r.put(key, _body(self.what, ident, released=True))

    def __exit__(self, *exc: object) -> None:
        if self._renew is not None:
            self._renew.stop()
        if self.key is not None:
            try:
                self._release(self.key, self.key[len(LEASE_PREFIX):])
            except Exception:  # noqa: BLE001 - a lease left behind goes stale; the push's own error matters more
                pass
            self.key = None


class RemoteGcLock:
    """`locks/gc` on a remote for a `with` block: one gc (or forget --remote) at a time. A live holder is an
    immediate LockTimeout; a stale one is taken over by compare-and-swap."""

    def __init__(self, remote: Session, what: str = "gc") -> None:
        self.remote, self.what, self.ident = remote, what, uuid.uuid4().hex
        self._renew: _Renewer | None = None

    def __enter__(self) -> RemoteGcLock:
        r = self.remote.r
        try:
            r.put(GC_KEY, _body(self.what, self.ident), if_absent=True)
        except RemotePreconditionFailed:
            got = self.remote.get_with_etag(GC_KEY)
            info = _parse(got[0]) if got else None
            if got is not None and not is_stale(info):
                raise LockTimeout(f"another gc is running on the remote {self.remote.url} "
                                  f"({RemoteLeaseInfo(GC_KEY, info).owner})",
                                  hint=f"wait for it to finish (or, if it is dead, delete {GC_KEY} on the remote)"
                                  ) from None
            try:
                if got is None:
                    r.put(GC_KEY, _body(self.what, self.ident), if_absent=True)
                else:
                    self.remote.t.put(GC_KEY, _body(self.what, self.ident), if_match=got[1])
            except RemotePreconditionFailed:
                raise LockTimeout(f"another gc took over the stale lock on the remote {self.remote.url}",
                                  hint="wait for it to finish") from None
        self._renew = _Renewer(self.remote, GC_KEY, self.what, self.ident)
        return self

    def wait_for_writers(self, wait: float, *, refuse_why: str | None = None) -> None:
        """Return once no live lease is left (stale ones deleted); LockTimeout after `wait` seconds, or at once
        with `refuse_why` (gc --now)."""
        deadline, delay = time.monotonic() + wait, 0.01
        while True:
            running = live_leases(self.remote, clean=True)
            if not running:
                return
            names = "; ".join(lease.owner for lease in running[:3])
            if refuse_why is not None:
                raise LockTimeout(f"{refuse_why}: {len(running)} writer(s) hold a lease on {self.remote.url} ({names})",
                                  hint="--now skips the grace period, so it runs only when nothing pushes")
            if time.monotonic() >= deadline:
                raise LockTimeout(f"{len(running)} writer(s) hold a lease on {self.remote.url} ({names})",
                                  hint="gc deletes only while no push runs: try again when they are done, or pass "
                                       "a longer wait")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def __exit__(self, *exc: object) -> None:
        if self._renew is not None:
            self._renew.stop()
        try:
            got = self.remote.get_small(GC_KEY, MAX_LEASE)
            if got is not None and (_parse(got) or {}).get("id") == self.ident:
                self.remote.r.delete(GC_KEY)
        except Exception:  # noqa: BLE001 - a lock left behind goes stale with its holder
            pass
