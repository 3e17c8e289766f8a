"""The transport contract: a byte store addressed by key, knowing nothing about commits.

A key is a relative, `/`-separated name such as `packs/ab/<hex>.pack`, `objects/ab/<hex>` or
`refs/heads/main`. Every transport offers the same operations with the same meaning:

    get(key, start=None, end=None) -> bytes       the bytes, or data[start:end] (RemoteNotFound if absent)
    get_with_etag(key) -> (bytes, etag)           the bytes and the version token to CAS against
    stat(key) -> KeyStat(size, etag) | None       None when absent
    exists(key) -> bool                           may be cheaper than stat
    put(key, data, *, if_absent=False, if_match=None) -> etag
                                                  atomic: readers see the old or the new bytes, never a mix;
                                                  if_absent: fail if the key exists (create-only);
                                                  if_match: fail unless the key exists with exactly that etag
                                                  (compare-and-swap); failure is RemotePreconditionFailed
    list(prefix="") -> Iterator[str]              every key under prefix (component-wise, recursive)
    delete(key)                                   idempotent: deleting an absent key is not an error

An etag is an opaque string token: compare it only for equality and only with tokens from the same transport.
Errors are all RemoteError subclasses (see ckstore.errors); a bad key or range is a UsageError.

A conditional put that fails with RemoteUnavailable may still have landed, and over a network one whose reply
was lost and whose request was retried reports RemotePreconditionFailed although it won: a caller moving a ref
re-reads it and treats "the ref now holds exactly what I wrote" as success.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterator, NamedTuple, Union

import blake3

from ..errors import RemoteNotFound, UsageError
from ..model.paths import problem

Data = Union[bytes, bytearray, memoryview]

MAX_KEY_BYTES = 1024          # the S3 limit


class KeyStat(NamedTuple):
    """A key's size in bytes and its etag."""

    size: int
    etag: str


def content_etag(data: Data) -> str:
    """The etag of memory:// and directory remotes: the BLAKE3-256 hex of the bytes."""
    n = memoryview(data).nbytes
    return blake3.blake3(data, max_threads=blake3.blake3.AUTO if n >= 1 << 22 else 1).hexdigest()


def check_key(key: str) -> str:
    """Return `key` if it is a safe relative key; else raise UsageError naming what is wrong."""
    why = problem(key, max_bytes=MAX_KEY_BYTES, controls=True)
    if why:
        raise UsageError(f"refusing remote key {str(key)[:200]!r}: {why}",
                         hint="keys are relative '/'-separated names like 'refs/heads/main'")
    return key


def check_prefix(prefix: str) -> str:
    """A list prefix: "" (everything) or a key, optionally ending in "/"; returned without the trailing "/"."""
    if prefix == "":
        return ""
    if not isinstance(prefix, str):
        raise UsageError(f"a list prefix must be a str, not {type(prefix).__name__}")
    return check_key(prefix[:-1] if prefix.endswith("/") else prefix)


def check_range(start: int | None, end: int | None) -> None:
    """Raise UsageError unless `start` and `end` are each None or a non-negative int."""
    for name, v in (("start", start), ("end", end)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise UsageError(f"byte range {name} must be a non-negative int, not {v!r}")


def slice_range(data: bytes, start: int | None, end: int | None) -> bytes:
    """`data[start:end]`, a missing bound meaning that end of the data."""
    if start is None and end is None:
        return data
    return data[(start or 0):end]


def under_prefix(key: str, prefix: str) -> bool:
    """True when `key` is under `prefix` component-wise ("" matches every key)."""
    return not prefix or key.startswith(prefix + "/")


class Transport(ABC):
    """A byte store by key. Subclasses implement the abstract methods; see the module docstring for the contract."""

    #: URL naming this remote in messages (`file:///...`, `s3://bucket/prefix`, `memory://name`)
    url: str = ""
    #: survives the process (False for memory://)
    persistent: bool = True
    #: `stat`/`get_with_etag` must read the whole object to compute the etag (directory: content hash)
    etag_reads_content: bool = False
    #: range reads worth having in flight at once: a local file answers at once, an HTTP GET spends most of its
    #: time waiting (S3 on loopback, 1 GB: 10.8-12.7 s with 3 in flight, 8.5-9.5 s with 8)
    reads_in_flight: int = 3

    @abstractmethod
    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """The bytes of `key`, or `data[start:end]` (missing bounds mean the ends). RemoteNotFound if absent."""

    @abstractmethod
    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The whole value of `key` and its etag, read consistently. RemoteNotFound if absent."""

    @abstractmethod
    def stat(self, key: str) -> KeyStat | None:
        """`KeyStat(size, etag)` of `key`, or None if absent."""

    @abstractmethod
    def put(self, key: str, data: Data, *, if_absent: bool = False, if_match: str | None = None) -> str:
        """Store `data` under `key` atomically and return its new etag (RemotePreconditionFailed if a condition
        fails)."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key under `prefix` (a key path, matched whole component by component), recursively."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; no error if it is absent."""

    def exists(self, key: str) -> bool:
        """True when `key` exists; the default asks `stat`."""
        return self.stat(key) is not None

    def close(self) -> None:
        """Release connections; the transport must not be used afterwards."""

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # helpers for subclasses
    def _check_put_args(self, key: str, if_absent: bool, if_match: str | None) -> None:
        check_key(key)
        if if_absent and if_match is not None:
            raise UsageError("put: give if_absent or if_match, not both")
        if if_match is not None and (not isinstance(if_match, str) or not if_match):
            raise UsageError(f"put: if_match must be a non-empty etag string, not {if_match!r}")

    def _not_found(self, key: str) -> RemoteNotFound:
        return RemoteNotFound(f"{self.url}: no key {key!r}", url=self.url, key=key)
