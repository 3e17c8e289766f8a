"""An in-memory transport: a real store (etags, conditions, ranges), thread safe, gone with the process."""

from __future__ import annotations

import threading
from typing import Iterator

from ..errors import RemotePreconditionFailed, UsageError
from .base import (
    Data,
    KeyStat,
    Transport,
    check_key,
    check_prefix,
    check_range,
    content_etag,
    slice_range,
    under_prefix,
)


class MemoryTransport(Transport):
    """A transport over a dict in this process (memory://NAME), with content etags and conditional puts."""

    persistent = False

    def __init__(self, name: str = "") -> None:
        self.url = f"memory://{name}"
        self._data: dict[str, tuple[bytes, str]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """The stored bytes, or [start:end] of them; RemoteNotFound if absent."""
        check_key(key)
        check_range(start, end)
        with self._lock:
            item = self._data.get(key)
        if item is None:
            raise self._not_found(key)
        return slice_range(item[0], start, end)

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The stored bytes and their content etag; RemoteNotFound if absent."""
        check_key(key)
        with self._lock:
            item = self._data.get(key)
        if item is None:
            raise self._not_found(key)
        return item

    def stat(self, key: str) -> KeyStat | None:
        """Size and etag of the key, or None if absent."""
        check_key(key)
        with self._lock:
            item = self._data.get(key)
        return None if item is None else KeyStat(len(item[0]), item[1])

    def put(self, key: str, data: Data, *, if_absent: bool = False, if_match: str | None = None) -> str:
        """Store a copy of `data` and return its etag; RemotePreconditionFailed if if_absent/if_match fails."""
        self._check_put_args(key, if_absent, if_match)
        value = bytes(data)
        etag = content_etag(value)
        with self._lock:
            cur = self._data.get(key)
            if if_absent and cur is not None:
                raise RemotePreconditionFailed(f"{self.url}: {key!r} already exists", url=self.url, key=key)
            if if_match is not None and (cur is None or cur[1] != if_match):
                found = "nothing" if cur is None else f"etag {cur[1]}"
                raise RemotePreconditionFailed(f"{self.url}: {key!r} changed: expected etag {if_match}, found {found}",
                                               url=self.url, key=key)
            self._data[key] = (value, etag)
        return etag

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key under `prefix`, sorted."""
        prefix = check_prefix(prefix)
        with self._lock:
            keys = sorted(k for k in self._data if under_prefix(k, prefix))
        return iter(keys)

    def delete(self, key: str) -> None:
        """Remove the key if present."""
        check_key(key)
        with self._lock:
            self._data.pop(key, None)


_named: dict[str, MemoryTransport] = {}
_named_lock = threading.Lock()


def named_memory_transport(name: str) -> MemoryTransport:
    """The process-global MemoryTransport called `name` (memory://name), created on first use."""
    if not isinstance(name, str) or not name or "/" in name:
        raise UsageError(f"memory:// transport name must be a non-empty name without '/', not {name!r}")
    with _named_lock:
        t = _named.get(name)
        if t is None:
            t = _named[name] = MemoryTransport(name)
        return t


def forget_memory_transport(name: str) -> None:
    """Drop the named memory transport (its data goes with it)."""
    with _named_lock:
        _named.pop(name, None)
