"""RetryingTransport: a Transport that retries transient failures of the one it wraps, under the same contract."""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterator

from ..errors import RemoteUnavailable
from .base import Data, KeyStat, Transport

ATTEMPTS = max(1, int(os.environ.get("CKSTORE_REMOTE_ATTEMPTS", "4") or 4))
BACKOFF = float(os.environ.get("CKSTORE_REMOTE_BACKOFF", "0.25") or 0.25)


class RetryingTransport(Transport):
    """Retries RemoteUnavailable (timeouts, 5xx, a key locked by another writer) with exponential backoff.

    Reads, lists, deletes and plain or create-only puts are retried: each is idempotent, and a create-only put
    whose first attempt landed reports RemotePreconditionFailed on the retry, as the contract allows. A
    compare-and-swap put (`if_match`) is never retried: after an unclear failure only the caller can tell,
    by re-reading, whether it won. `retries` counts the attempts that failed and were repeated.
    """

    def __init__(self, inner: Transport, *, attempts: int | None = None, backoff: float | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.inner, self.sleep = inner, sleep
        self.attempts = max(1, ATTEMPTS if attempts is None else attempts)
        self.backoff = BACKOFF if backoff is None else backoff
        self.url, self.persistent, self.etag_reads_content = inner.url, inner.persistent, inner.etag_reads_content
        self.retries = 0

    def _retry(self, what: str, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        delay, last = self.backoff, None
        for attempt in range(self.attempts):
            try:
                return fn(*args, **kwargs)
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
            return self.inner.put(key, data, if_absent=if_absent, if_match=if_match)
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
