"""A remote served by `ckstore serve`, over HTTP(S) with the standard library's `http.client`.

`https://host:8470/NAME` (also `ckstore://host:8470/NAME`, the same over TLS, and `http://` — to loopback only,
unless `allow_http`). The token is `token`, else the first line of `token_file`, else `CKSTORE_TOKEN`. Certificates
are always verified, against `ca_bundle` when given, else the system's roots.

Each thread keeps one keep-alive connection. Idempotent requests (GET, HEAD, LIST, DELETE, plain and create-only
PUT) are retried `max_retries` times on connection failures, 502/503/504 and 429 (after its Retry-After); a
compare-and-swap PUT is sent once (the caller re-reads and decides, see `base`). Errors map to the RemoteError
classes: 401/403 RemoteAccessDenied (with the server's message), 404 RemoteNotFound, 412 RemotePreconditionFailed,
5xx and connection failures RemoteUnavailable, 400 UsageError. docs/serve.md lists the routes.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import threading
import time
from typing import Iterator
from urllib.parse import quote, urlencode, urlsplit

from ..errors import (
    CkstoreError,
    RemoteAccessDenied,
    RemoteError,
    RemotePreconditionFailed,
    RemoteUnavailable,
    UsageError,
)
from ..model.urls import check_plain_http
from .base import Data, KeyStat, Transport, check_key, check_prefix, check_range

TRANSIENT_STATUS = {429, 502, 503, 504}
BACKOFF = 0.2
MAX_RETRY_AFTER = 30.0          # a server asking for a longer wait gets an error instead
MAX_ERROR_BODY = 8192


class HttpTransport(Transport):
    """Keys on a served remote; see the module docstring."""

    etag_reads_content = True   # the server's etag is the content hash, computed by reading the value
    reads_in_flight = 8         # an HTTP GET mostly waits, as with S3

    def __init__(self, url: str, *, token: str | None = None, token_file: str | os.PathLike | None = None,
                 allow_http: bool | None = None, ca_bundle: str | os.PathLike | None = None, timeout: float = 60.0,
                 max_retries: int = 2) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise UsageError(f"served remote URL {url!r} is not valid: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https", "ckstore") or not parts.hostname:
            raise UsageError(f"not a served remote URL: {url!r}", hint="write https://HOST:PORT/NAME")
        name = parts.path.strip("/")
        if not name or "/" in name or parts.query or parts.fragment:
            raise UsageError(f"served remote URL {url!r} must name one remote: https://HOST:PORT/NAME")
        check_plain_http(url, bool(allow_http), "the served remote")
        self.tls = scheme != "http"
        self.host, self.port = parts.hostname, port or (443 if self.tls else 80)
        self.name = name
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"{'https' if self.tls else 'http'}://{host}:{self.port}/{name}"
        self.base = "/" + quote(name, safe="")
        self.timeout, self.max_retries = float(timeout), int(max_retries)
        self.token = token or self._read_token(token_file) or os.environ.get("CKSTORE_TOKEN") or None
        self.context = None
        if self.tls:
            try:
                self.context = ssl.create_default_context(cafile=os.fspath(ca_bundle) if ca_bundle else None)
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(f"cannot read the CA bundle {ca_bundle}: {exc}") from None
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    @staticmethod
    def _read_token(path: str | os.PathLike | None) -> str | None:
        if path is None:
            return None
        try:
            with open(path, encoding="utf-8") as f:
                return f.readline().strip() or None
        except OSError as exc:
            raise UsageError(f"cannot read the token file {path}: {exc.strerror or exc}") from None

    # ---------------------------------------------------------------- the wire
    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.tls:
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.context)
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _send(self, method: str, path: str, body: Data | None, headers: dict[str, str]
              ) -> tuple[int, dict[str, str], bytes]:
        conn = self._conn()
        try:
            try:
                conn.request(method, path, body=body, headers=headers)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may have answered early (413) and closed: read what it said
            resp = conn.getresponse()
            data = resp.read()
        except BaseException:
            self._drop()
            raise
        out = {k.lower(): v for k, v in resp.getheaders()}
        if resp.will_close:
            self._drop()
        return resp.status, out, data

    def _request(self, method: str, path: str, *, key: str | None = None, body: Data | None = None,
                 headers: dict[str, str] | None = None, retry: bool = True) -> tuple[int, dict[str, str], bytes]:
        """One request, retried when idempotent; RemoteError subclasses for failures, else (status, headers,
        body) for 2xx, 404, 412 and 416 (the caller decides what those mean)."""
        hdrs = {"user-agent": "ckstore", **(headers or {})}
        if self.token:
            hdrs["authorization"] = f"Bearer {self.token}"
        if body is not None:
            hdrs["content-length"] = str(memoryview(body).nbytes)
        attempts = 1 + (max(0, self.max_retries) if retry else 0)
        delay = BACKOFF
        for attempt in range(attempts):
            last = attempt + 1 == attempts
            try:
                status, rh, data = self._send(method, path, body, hdrs)
            except ssl.SSLCertVerificationError as exc:
                raise RemoteAccessDenied(f"{self.url}: the server's certificate is not trusted: "
                                         f"{exc.verify_message or exc}", url=self.url, key=key,
                                         hint="pass the CA bundle that signed it (ca_bundle / --ca-bundle)") from None
            except (OSError, http.client.HTTPException) as exc:
                if last:
                    raise RemoteUnavailable(f"{self.url}: {method} {key or ''} failed: {exc or type(exc).__name__}",
                                            url=self.url, key=key, hint="check that the server runs; retry") from None
                time.sleep(delay)
                delay *= 3
                continue
            if status in TRANSIENT_STATUS and not last:
                wait = self._retry_after(rh, delay)
                if wait is not None:
                    time.sleep(wait)
                    delay *= 3
                    continue
            if status < 300 or status in (404, 412, 416):
                return status, rh, data
            raise self._error(status, rh, data, key)
        raise AssertionError("unreachable")

    @staticmethod
    def _retry_after(headers: dict[str, str], default: float) -> float | None:
        text = headers.get("retry-after", "")
        wait = float(text) if text.isdigit() else default
        return wait if wait <= MAX_RETRY_AFTER else None

    def _error(self, status: int, headers: dict[str, str], data: bytes, key: str | None) -> CkstoreError:
        try:
            info = json.loads(data[:MAX_ERROR_BODY])
            message = str(info.get("message", ""))[:1000] if isinstance(info, dict) else ""
        except (ValueError, UnicodeDecodeError):
            message = data[:300].decode("utf-8", "replace")
        message = message or headers.get("x-ckstore-error", "")[:1000]
        where = f"{self.url}: " + (message or f"HTTP {status}")
        if status in (401, 403):
            hint = ("give a valid token (token, token_file, or CKSTORE_TOKEN)" if status == 401
                    else "ask the server's admin for a token with that scope")
            return RemoteAccessDenied(where, url=self.url, key=key, hint=hint)
        if status == 400:
            return UsageError(where)  # the request itself was bad
        if status == 429 or status >= 500:
            return RemoteUnavailable(where, url=self.url, key=key, hint="retry later")
        return RemoteError(where, url=self.url, key=key)

    def _key_path(self, key: str) -> str:
        return f"{self.base}/k/{quote(check_key(key), safe='/')}"

    # ---------------------------------------------------------------- the contract
    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """The value, or [start:end] of it (a Range request)."""
        check_range(start, end)
        path = self._key_path(key)
        if start is None and end is None:
            return self.get_with_etag(key)[0]
        lo = start or 0
        if end is not None and end <= lo:
            if not self.exists(key):
                raise self._not_found(key)
            return b""
        rng = f"bytes={lo}-" + ("" if end is None else str(end - 1))
        status, _, data = self._request("GET", path, key=key, headers={"range": rng})
        if status == 404:
            raise self._not_found(key)
        return b"" if status == 416 else data

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The whole value and its etag."""
        status, headers, data = self._request("GET", self._key_path(key), key=key)
        if status == 404:
            raise self._not_found(key)
        return data, self._etag(headers, key)

    def _etag(self, headers: dict[str, str], key: str) -> str:
        etag = headers.get("etag", "").strip().strip('"')
        if not etag:
            raise RemoteError(f"{self.url}: the server sent no etag for {key!r}", url=self.url, key=key)
        return etag

    def stat(self, key: str) -> KeyStat | None:
        """Size and etag (a HEAD request), or None if absent."""
        status, headers, _ = self._request("HEAD", self._key_path(key), key=key)
        if status == 404:
            return None
        size = headers.get("x-ckstore-size", "")
        if not size.isdigit():
            raise RemoteError(f"{self.url}: the server sent no size for {key!r}", url=self.url, key=key)
        return KeyStat(int(size), self._etag(headers, key))

    def exists(self, key: str) -> bool:
        """True when the key exists (a HEAD that spares the server hashing the value)."""
        status, _, _ = self._request("HEAD", self._key_path(key) + "?etag=0", key=key)
        return status != 404

    def put(self, key: str, data: Data, *, if_absent: bool = False, if_match: str | None = None) -> str:
        """PUT with `If-None-Match: *` (create-only) or `If-Match` (compare-and-swap); returns the new etag."""
        self._check_put_args(key, if_absent, if_match)
        headers = {"content-type": "application/octet-stream"}
        if if_absent:
            headers["if-none-match"] = "*"
        if if_match is not None:
            headers["if-match"] = f'"{if_match}"'
        status, rh, _ = self._request("PUT", self._key_path(key), key=key, body=data, headers=headers,
                                      retry=if_match is None)
        if status == 412:
            why = "already exists" if if_absent else f"changed: expected etag {if_match}"
            raise RemotePreconditionFailed(f"{self.url}: {key!r} {why}", url=self.url, key=key)
        if status == 404:
            raise self._not_found(key)
        return self._etag(rh, key)

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key under `prefix`, in order, page by page."""
        prefix = check_prefix(prefix)
        after = ""
        while True:
            query = urlencode({"prefix": prefix, "after": after})
            status, _, data = self._request("GET", f"{self.base}/list?{query}")
            try:
                page = json.loads(data)
                keys, after = list(page["keys"]), page["next"]
            except (ValueError, KeyError, TypeError):
                raise RemoteError(f"{self.url}: the server sent an unreadable key list", url=self.url) from None
            yield from keys
            if not after:
                return

    def delete(self, key: str) -> None:
        """DELETE (absent keys are fine)."""
        self._request("DELETE", self._key_path(key), key=key)

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
