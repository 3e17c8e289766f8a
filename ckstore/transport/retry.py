"""RetryingTransport: a Transport that retries transient failures of the one it wraps, under the same contract."""

from __future__ import annotations

import os
import threading
import time
import warnings
from typing import Any, Callable, Iterator

from ..errors import RemoteUnavailable
from .base import Data, KeyStat, Transport

ATTEMPTS = max(1, int(os.environ.get("CKSTORE_REMOTE_ATTEMPTS", "4") or 4))
BACKOFF = float(os.environ.get("CKSTORE_REMOTE_BACKOFF", "0.25") or 0.25)
# Seconds one request may take before it counts as stalled (0: no limit). A 64 MiB pack still fits at 0.25 MB/s.
TIMEOUT = float(os.environ.get("CKSTORE_REMOTE_TIMEOUT", "300") or 0)


class RemoteTimedOut(UserWarning):
    """A request to a remote took longer than the per-request timeout; it is abandoned and retried."""


class RetryingTransport(Transport):
    """Retries RemoteUnavailable (timeouts, 5xx, a key locked by another writer) with exponential backoff.

    Every request has a deadline of `timeout` seconds (CKSTORE_REMOTE_TIMEOUT, default 300; 0 for none): it runs
    in its own daemon thread, and one that has not returned by then (a stalled connection, a hung NFS server) is
    abandoned, reported with a RemoteTimedOut warning and counts as a transient failure. An abandoned request
    that completes later does no harm: its reply is dropped, and a put it makes is one the retry makes too (the
    same bytes under the same key; a create-only put that finds its own bytes is reported as RemotePreconditionFailed,
    which the callers accept).

    Reads, lists, deletes and plain or create-only puts are retried: each is idempotent, and a create-only put
    whose first attempt landed reports RemotePreconditionFailed on the retry, as the contract allows. A
    compare-and-swap put (`if_match`) is never retried: after an unclear failure only the caller can tell,
    by re-reading, whether it won. `retries` counts the attempts that failed and were repeated.
    """

    def __init__(self, inner: Transport, *, attempts: int | None = None, backoff: float | None = None,
                 sleep: Callable[[float], None] = time.sleep, timeout: float | None = None) -> None:
        self.inner, self.sleep = inner, sleep
        self.attempts = max(1, ATTEMPTS if attempts is None else attempts)
        self.backoff = BACKOFF if backoff is None else backoff
        self.timeout = TIMEOUT if timeout is None else float(timeout)
        self.timeouts = 0  # requests abandoned after `timeout` seconds
        self.url, self.persistent, self.etag_reads_content = inner.url, inner.persistent, inner.etag_reads_content
        self.reads_in_flight = inner.reads_in_flight
        self.retries = 0

    def _retry(self, what: str, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        delay, last = self.backoff, None
        for attempt in range(self.attempts):
            try:
                return self._call(what, key, fn, *args, **kwargs)
            except RemoteUnavailable as exc:
                last = exc
                if attempt + 1 < self.attempts:
                    self.retries += 1
                    self.sleep(delay)
                    delay *= 3
        raise RemoteUnavailable(f"{what} {key!r} on {self.url} still failing after {self.attempts} attempts: {last}",
                                url=self.url, key=key,
                                hint="check the network and the remote's address (and --endpoint-url), then retry; "
                                     "what was already transferred is kept") from last

    def _call(self, what: str, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args, **kwargs) with the per-request deadline: RemoteUnavailable if it has not returned in time."""
        if not self.timeout or self.timeout <= 0:
            return fn(*args, **kwargs)
        box: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                box["value"] = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=run, daemon=True, name="ckstore-request").start()
        if not done.wait(self.timeout):
            self.timeouts += 1
            message = f"{what} {key!r} on {self.url} timed out after {self.timeout:g} s"
            warnings.warn(RemoteTimedOut(message + " (abandoned; a transient failure)"), stacklevel=3)
            raise RemoteUnavailable(message, url=self.url, key=key,
                                    hint="the remote stalled; set CKSTORE_REMOTE_TIMEOUT (seconds) to wait longer")
        if "error" in box:
            raise box.pop("error")
        return box["value"]

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """See Transport.get."""
        return self._retry("GET", key, self.inner.get, key, start, end)

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """See Transport.get_with_etag."""
        return self._retry("GET", key, self.inner.get_with_etag, key)

    def stat(self, key: str) -> KeyStat | None:
        """See Transport.stat."""
        return self._retry("HEAD", key, self.inner.stat, key)

    def exists(self, key: str) -> bool:
        """See Transport.exists."""
        return self._retry("HEAD", key, self.inner.exists, key)

    def put(self, key: str, data: Data, *, if_absent: bool = False, if_match: str | None = None) -> str:
        """See Transport.put; compare-and-swap puts are not retried."""
        if if_match is not None:
            return self._call("PUT", key, self.inner.put, key, data, if_absent=if_absent, if_match=if_match)
        return self._retry("PUT", key, self.inner.put, key, data, if_absent=if_absent)

    def list(self, prefix: str = "") -> Iterator[str]:
        """See Transport.list (the listing is retried whole, so it is read before the first key is returned)."""
        return iter(self._retry("LIST", prefix, lambda: list(self.inner.list(prefix))))

    def delete(self, key: str) -> None:
        """See Transport.delete."""
        self._retry("DELETE", key, self.inner.delete, key)

    def close(self) -> None:
        """Close the wrapped transport."""
        self.inner.close()
