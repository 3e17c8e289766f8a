"""Remotes: byte stores addressed by key (see `base` for the contract), and `open_transport(url)`.

    open_transport("/mnt/share/models")            DirectoryTransport (also a relative path)
    open_transport("file:///mnt/share/models")     DirectoryTransport
    open_transport("s3://bucket/prefix", endpoint_url="http://127.0.0.1:9000")   S3Transport
    open_transport("memory://name")                the process-global MemoryTransport called "name"
    open_transport("https://host:8470/team")       HttpTransport: a remote served by `ckstore serve`
                                                   (also ckstore://host:8470/team; http:// only to loopback
                                                   or with allow_http=True)

`S3Transport` and `HttpTransport` are imported on first use, so importing this package loads neither obstore
nor the HTTP client.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import UsageError
from .base import KeyStat, Transport, check_key
from .directory import DirectoryTransport
from .memory import MemoryTransport, forget_memory_transport, named_memory_transport

__all__ = ["Transport", "KeyStat", "check_key", "open_transport", "DirectoryTransport", "MemoryTransport",
           "S3Transport", "HttpTransport", "named_memory_transport", "forget_memory_transport"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def open_transport(url: str | os.PathLike, **options: Any) -> Transport:
    """The transport for `url`: a path or file:// URL, s3://bucket/prefix, or memory://name.

    `options` go to the transport's constructor: for directories `create`, `lock_timeout`, `fsync`; for S3
    `endpoint_url`, `region`, `profile`, `access_key_id`, `secret_access_key`, `session_token`, `allow_http`,
    `ca_bundle`, `sse`, `sse_kms_key_id`, `max_retries`, `retry_timeout`, `connect_timeout`, `timeout`,
    `s3_config`; for served remotes `token`, `token_file`, `allow_http`, `ca_bundle`, `timeout`, `max_retries`.
    """
    if not isinstance(url, str):
        return DirectoryTransport(url, **options)
    m = _SCHEME.match(url)
    if not m:
        if not url:
            raise UsageError("empty remote URL")
        return DirectoryTransport(url, **options)
    scheme = m.group(1).lower()
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise UsageError(f"file URL {url!r} names host {parts.netloc!r}; mount it and give the local path",
                             hint="write file:///absolute/path")
        if parts.query or parts.fragment:
            raise UsageError(f"file URL {url!r} has a query or fragment")
        path = unquote(parts.path)
        if not path:
            raise UsageError(f"file URL {url!r} has no path")
        return DirectoryTransport(path, **options)
    if scheme in ("s3", "s3a"):
        from .s3 import S3Transport
        return S3Transport(url, **options)
    if scheme in ("http", "https", "ckstore"):
        from .http import HttpTransport
        return HttpTransport(url, **options)
    if scheme == "memory":
        if options:
            raise UsageError(f"memory:// transports take no options (got {', '.join(sorted(options))})")
        return named_memory_transport(url[len(m.group(0)):].strip("/"))
    raise UsageError(f"unsupported remote URL scheme {scheme!r} in {url!r}",
                     hint="use a directory path, file:///path, s3://bucket/prefix, https://host:port/name "
                          "(a served remote) or memory://name")


def __getattr__(name: str) -> Any:
    if name == "S3Transport":
        from .s3 import S3Transport
        return S3Transport
    if name == "HttpTransport":
        from .http import HttpTransport
        return HttpTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
