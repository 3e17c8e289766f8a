"""A real transport wrapped to fail on purpose: the sync and contract suites inject faults with it, never mocks.

A stall (`stall_every=k`) makes every k-th request hang for `stall_seconds` before it reaches the real transport,
as a dead connection or a hung NFS server does; `release()` ends every stall at once (tests call it when done, so
no abandoned request thread outlives them)."""

from __future__ import annotations

import threading

from ckstore.errors import RemoteError, RemoteUnavailable
from ckstore.transport import Transport


class Faulty(Transport):
    """A real transport that fails on purpose: after N puts or N range GETs of packs, or transiently."""

    def __init__(self, inner: Transport, *, fail_put_after: int | None = None, fail_get_after: int | None = None,
                 flaky_every: int = 0, flaky_cas: bool = True, allow_delete: bool = False,
                 before_ref_put=None, stall_every: int = 0, stall_seconds: float = 120.0,
                 stall_first: int = 0) -> None:
        self.inner, self.url = inner, inner.url
        self.fail_put_after, self.fail_get_after, self.flaky_every = fail_put_after, fail_get_after, flaky_every
        self.before_ref_put = before_ref_put
        self.flaky_cas, self.allow_delete = flaky_cas, allow_delete
        self.persistent, self.etag_reads_content = inner.persistent, inner.etag_reads_content
        self.puts = self.gets = self.calls = self.failed = 0
        self.landed = 0
        self.lock = threading.Lock()
        self.stall_every, self.stall_seconds, self.stall_first = stall_every, stall_seconds, stall_first
        self.stalled = 0
        self._released = threading.Event()

    def release(self) -> None:
        """End every stall now (and let no new request stall)."""
        self.stall_every = self.stall_first = 0
        self._released.set()

    def _stall(self) -> None:
        with self.lock:
            self.calls += 1
            stall = (self.calls <= self.stall_first) or bool(self.stall_every and self.calls % self.stall_every == 0)
            self.stalled += stall
        if stall:
            self._released.wait(self.stall_seconds)

    def _flaky(self, what: str) -> None:
        if self.stall_every or self.stall_first:
            self._stall()
            return
        if self.flaky_every:
            with self.lock:
                self.calls += 1
                fail = self.calls % self.flaky_every == 0
                self.failed += fail
            if fail:
                raise RemoteUnavailable(f"injected transient failure of {what}", url=self.url)

    def get(self, key, start=None, end=None):
        self._flaky("GET")
        if key.startswith("packs/") and start is not None:
            with self.lock:
                self.gets += 1
                fail = self.fail_get_after is not None and self.gets > self.fail_get_after
            if fail:
                raise RemoteError("injected: connection lost mid-fetch", url=self.url, key=key)
        return self.inner.get(key, start, end)

    def get_with_etag(self, key):
        self._flaky("GET")
        return self.inner.get_with_etag(key)

    def stat(self, key):
        self._flaky("HEAD")
        return self.inner.stat(key)

    def exists(self, key):
        self._flaky("HEAD")
        return self.inner.exists(key)

    def list(self, prefix=""):
        self._flaky("LIST")
        return self.inner.list(prefix)

    def delete(self, key):
        if not self.allow_delete:
            raise AssertionError("push, fetch and clone never delete")
        self._flaky("DELETE")
        return self.inner.delete(key)

    def close(self):
        self.inner.close()

    def put(self, key, data, *, if_absent=False, if_match=None):
        if if_match is None or self.flaky_cas:
            self._flaky("PUT")
        if key.startswith("refs/heads/") and self.before_ref_put:
            self.before_ref_put()
        if key.startswith("packs/"):
            with self.lock:
                self.puts += 1
                fail = self.fail_put_after is not None and self.puts > self.fail_put_after
            if fail:
                raise RemoteError("injected: the push process died", url=self.url, key=key)
        etag = self.inner.put(key, data, if_absent=if_absent, if_match=if_match)
        with self.lock:
            self.landed += len(data)
        return etag
