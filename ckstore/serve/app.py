"""The served remote's HTTP API (Starlette): the transport contract of `ckstore.transport.base` over HTTP, each
remote a `DirectoryTransport` at `<root>/<name>`, every request authenticated, scoped, limited and (writes) audited.

    GET    /                                 {"service": "ckstore", "api": 1}
    GET    /<name>/k/<key>                   bytes + ETag; `Range: bytes=a-b` -> 206 (416 past the end)
    HEAD   /<name>/k/<key>                   X-Ckstore-Size + ETag (hashes the value); `?etag=0`: existence only
    PUT    /<name>/k/<key>                   body = value; `If-None-Match: *` create-only, `If-Match: "<etag>"` CAS
    DELETE /<name>/k/<key>                   idempotent (204)
    GET    /<name>/list?prefix=&after=&limit=   {"keys": [...], "next": <key or null>} in key order

Errors are JSON `{"error": code, "message": ..., "scope": ...}`: 400 bad key or request, 401 token refused,
403 scope missing or protected ref, 404 no such key, 412 precondition failed, 413 body too large, 429 rate
limited (Retry-After), 503 storage unavailable. docs/serve.md describes them for people.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import (
    CkstoreError,
    RemoteError,
    RemoteNotFound,
    RemotePreconditionFailed,
    RemoteUnavailable,
    UsageError,
)
from ..transport.base import check_key, check_prefix
from ..transport.directory import DirectoryTransport
from .audit import AuditLog
from .policy import Forbidden, Refused, Write, adds_features_only, check_read, check_ref_write, check_write
from .tokens import MAX_SECRET, Token, TokenRefused, TokenStore, state_dir

MIB = 1 << 20
DEFAULT_MAX_REQUEST = 64 * MIB
DRAIN_PAST_LIMIT = 64 * MIB      # an over-limit body is read and dropped up to this, so the client sees the 413
PAGE = 5000                      # keys per list page (at most MAX_PAGE when asked)
MAX_PAGE = 10000
CAS_ATTEMPTS = 5
MAX_HEADERS = 16 * 1024          # bytes of request headers, all told (h11 bounds only a head still arriving)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_RANGE = re.compile(r"^bytes=(\d{1,19})-(\d{0,19})$")


class TooLarge(CkstoreError):
    """A request body over the limit (HTTP 413)."""


class RateLimited(CkstoreError):
    """Too many requests for one token (HTTP 429); `.retry_after` in seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimiter:
    """A token bucket per client: `rate` requests a second, bursts of up to `rate` (at least 1)."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.clock = rate, clock
        self.buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, who: str) -> None:
        """Spend one request of `who`'s budget; RateLimited when it is empty."""
        if not self.rate:
            return
        cap = max(1.0, self.rate)
        now = self.clock()
        with self._lock:
            level, then = self.buckets.get(who, (cap, now))
            level = min(cap, level + (now - then) * self.rate)
            if level < 1:
                self.buckets[who] = (level, now)
                wait = (1 - level) / self.rate
                raise RateLimited(f"rate limit of {self.rate:g} requests/s exceeded: retry in {wait:.2f} s", wait)
            self.buckets[who] = (level - 1, now)
            if len(self.buckets) > 100_000:       # unknown clients must not grow this without bound
                self.buckets.clear()


@dataclass
class ServeConfig:
    """What a served root is and how it is limited."""

    root: Path
    max_request: int = DEFAULT_MAX_REQUEST
    rate: float | None = None
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    remotes: dict[str, DirectoryTransport] = field(default_factory=dict)


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    # the message again in a header: a HEAD's answer has no body to carry it
    headers = {**extra.pop("headers", {}), "x-ckstore-error": message[:500].encode("ascii", "replace").decode()}
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status, headers=headers)


def _response_for(exc: BaseException) -> JSONResponse:
    """The HTTP answer for an error a request ran into."""
    if isinstance(exc, TokenRefused):
        return _error(401, "unauthorized", str(exc), headers={"www-authenticate": "Bearer"})
    if isinstance(exc, Forbidden):
        return _error(403, "forbidden", str(exc), scope=exc.scope)
    if isinstance(exc, Refused):
        return _error(403, "protected", str(exc))
    if isinstance(exc, TooLarge):
        return _error(413, "too_large", str(exc), headers={"connection": "close"})
    if isinstance(exc, RateLimited):
        return _error(429, "rate_limited", str(exc), headers={"retry-after": str(max(1, math.ceil(exc.retry_after)))},
                      retry_after=exc.retry_after)
    if isinstance(exc, UsageError):
        return _error(400, "bad_request", str(exc))
    if isinstance(exc, RemoteNotFound):
        return _error(404, "not_found", str(exc))
    if isinstance(exc, RemotePreconditionFailed):
        return _error(412, "precondition_failed", str(exc))
    if isinstance(exc, RemoteUnavailable):
        return _error(503, "unavailable", str(exc), headers={"retry-after": "1"})
    if isinstance(exc, (RemoteError, OSError)):
        return _error(409, "storage", str(exc) if isinstance(exc, RemoteError) else f"storage error: {exc.strerror}")
    return _error(400, "bad_request", str(exc) or type(exc).__name__)


def _unquote_etag(value: str) -> str:
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


class Server:
    """The request handlers over one served root."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.root = Path(config.root).resolve()
        self.state = state_dir(self.root)
        self.tokens = TokenStore(self.state, config.clock)
        self.audit = AuditLog(self.state, config.clock)
        self.limiter = RateLimiter(config.rate, config.monotonic)
        self._lock = threading.Lock()

    # -- who is asking
    def authenticate(self, request: Request) -> Token:
        """The request's live token (TokenRefused), after its rate budget (RateLimited)."""
        header = request.headers.get("authorization", "")
        secret = header[7:].strip() if header[:7].lower() == "bearer " else None
        if header and len(header) > MAX_SECRET + 20:
            secret = "-"            # an absurd header is no token at all
        try:
            token = self.tokens.authenticate(secret)
        except TokenRefused:
            self.limiter.take("addr:" + (request.client.host if request.client else "?"))
            raise
        self.limiter.take("token:" + token.name)
        return token

    # -- which remote
    def remote(self, name: str, token: Token, *, create: bool = False) -> DirectoryTransport | None:
        """The remote `name` (None if it does not exist yet and `create` is false)."""
        if not _NAME.match(name):
            raise RemoteNotFound(f"no remote named {name[:100]!r} here", url=name)
        if not token.may_use(name):
            raise Forbidden(f"the token {token.name!r} is not valid for the remote {name!r}", f"repo:{name}")
        with self._lock:
            t = self.config.remotes.get(name)
            if t is not None:
                return t
            path = self.root / name
            if not path.is_dir():
                if not create:
                    return None
                if not (token.admin or name in token.repos):
                    raise Forbidden(f"the remote {name!r} does not exist, and only an admin token, or one given "
                                    f"--repo {name}, may create it", "admin")
            t = self.config.remotes[name] = DirectoryTransport(path, create=True)
            return t

    # -- endpoints
    async def index(self, request: Request) -> Response:
        """What this server is (no token needed)."""
        return JSONResponse({"service": "ckstore", "api": 1})

    async def key(self, request: Request) -> Response:
        """GET, HEAD, PUT or DELETE one key."""
        entry: dict[str, Any] | None = None
        try:
            name, key = request.path_params["repo"], request.path_params["key"]
            if request.method in ("PUT", "DELETE"):
                entry = {"token": None, "addr": request.client.host if request.client else None, "repo": name,
                         "op": request.method.lower(), "key": key[:1100], "size": None}
            token = self.authenticate(request)
            if entry is not None:
                entry["token"] = token.name
            check_key(key)
            if request.method == "PUT":
                return await self.put(request, token, name, key, entry)
            if request.method == "DELETE":
                await run_in_threadpool(self.delete, token, name, key)
                return self.done(entry, Response(status_code=204))
            check_read(token)
            t = self.remote(name, token)
            if request.method == "HEAD":
                return await run_in_threadpool(self.head, t, key, request.query_params.get("etag") != "0")
            return await run_in_threadpool(self.get, t, key, request.headers.get("range"))
        except ClientDisconnect:
            return Response(status_code=400)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an answer, never a crash
            return self.done(entry, _response_for(exc), exc)

    def done(self, entry: dict[str, Any] | None, response: Response, exc: BaseException | None = None) -> Response:
        """Audit a write's outcome (if this was one) and return its response."""
        if entry is not None:
            self.audit.append(**entry, result=response.status_code, detail=str(exc)[:300] if exc else "ok")
        return response

    def head(self, t: DirectoryTransport | None, key: str, with_etag: bool) -> Response:
        """Size and etag, or just existence."""
        if t is None:
            raise RemoteNotFound(f"no key {key!r}", key=key)
        if not with_etag:
            if not t.exists(key):
                raise RemoteNotFound(f"no key {key!r}", key=key)
            return Response(status_code=200)
        st = t.stat(key)
        if st is None:
            raise RemoteNotFound(f"no key {key!r}", key=key)
        return Response(status_code=200, headers={"etag": f'"{st.etag}"', "x-ckstore-size": str(st.size),
                                                  "content-length": str(st.size)})

    def get(self, t: DirectoryTransport | None, key: str, range_header: str | None) -> Response:
        """The value (200 with its etag), or a byte range of it (206; 416 when the range starts past the end)."""
        if t is None:
            raise RemoteNotFound(f"no key {key!r}", key=key)
        kind = "application/octet-stream"
        if range_header is None:
            data, etag = t.get_with_etag(key)
            return Response(data, media_type=kind, headers={"etag": f'"{etag}"'})
        m = _RANGE.match(range_header.strip())
        if not m:
            raise UsageError(f"unsupported Range header {range_header[:100]!r}: give one range, bytes=START-[END]")
        start, end = int(m.group(1)), int(m.group(2)) + 1 if m.group(2) else None
        if end is not None and end <= start:
            raise UsageError(f"Range {range_header[:100]!r} ends before it starts")
        data = t.get(key, start, end)
        if not data:
            return Response(status_code=416, headers={"content-range": "bytes */*"})
        return Response(data, status_code=206, media_type=kind,
                        headers={"content-range": f"bytes {start}-{start + len(data) - 1}/*"})

    async def body(self, request: Request) -> bytes:
        """The request body, read as it streams; TooLarge past the limit (the rest is drained, not kept)."""
        limit = self.config.max_request
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or len(declared) > 19):
            raise UsageError(f"bad Content-Length {declared[:40]!r}")
        too_large = TooLarge(f"request body over the server's limit of {limit / MIB:g} MiB")
        if declared is not None and int(declared) > limit + DRAIN_PAST_LIMIT:
            raise too_large
        buf, over = bytearray(), 0
        async for chunk in request.stream():
            if over or len(buf) + len(chunk) > limit:
                over += len(chunk)
                if over > DRAIN_PAST_LIMIT:
                    break
                continue
            buf += chunk
        if over:
            raise too_large
        return bytes(buf)

    async def put(self, request: Request, token: Token, name: str, key: str, entry: dict[str, Any]) -> Response:
        """PUT: the body under `key`, with the request's precondition; 200 with the new etag."""
        data = await self.body(request)
        entry["size"] = len(data)
        none_match, match = request.headers.get("if-none-match"), request.headers.get("if-match")
        if none_match is not None and none_match.strip() != "*":
            raise UsageError("If-None-Match takes only '*' (create-only)")
        if none_match is not None and match is not None:
            raise UsageError("give If-None-Match or If-Match, not both")
        w = Write(key, data, if_absent=none_match is not None, if_match=_unquote_etag(match) if match else None)
        if w.if_match == "":
            raise UsageError("If-Match needs an etag")
        etag = await run_in_threadpool(self.write, token, name, w)
        return self.done(entry, JSONResponse({"etag": etag}, headers={"etag": f'"{etag}"'}))

    def write(self, token: Token, name: str, w: Write) -> str:
        """Check the scope (and, for refs, the remote's protection) and make the write; returns the etag."""
        if w.key == "config" and w.if_match and token.push_globs and w.data is not None:
            t = self.remote(name, token, create=False)
            cur = self.current(t, "config") if t is not None else None
            if cur is not None and cur[1] == w.if_match and adds_features_only(cur[0], w.data):
                return t.put(w.key, w.data, if_match=w.if_match)   # a push raising the format version
        check_write(token, w)
        t = self.remote(name, token, create=True)
        assert t is not None
        assert w.data is not None
        if not w.key.startswith("refs/"):
            return t.put(w.key, w.data, if_absent=w.if_absent, if_match=w.if_match)
        for _ in range(CAS_ATTEMPTS):
            cur = self.current(t, w.key)
            if w.if_absent and cur is not None:
                raise RemotePreconditionFailed(f"{w.key!r} already exists", key=w.key)
            if w.if_match is not None and (cur is None or cur[1] != w.if_match):
                raise RemotePreconditionFailed(f"{w.key!r} changed: expected etag {w.if_match}", key=w.key)
            check_ref_write(t, token, w.key, cur[0] if cur else None, w.data)
            try:   # the check held for the value read: write only if that value is still there
                return t.put(w.key, w.data, if_absent=cur is None, if_match=cur[1] if cur else None)
            except RemotePreconditionFailed:
                if w.if_absent or w.if_match is not None:
                    raise
        raise RemoteUnavailable(f"{w.key!r} kept moving: retry", key=w.key)

    @staticmethod
    def current(t: DirectoryTransport, key: str) -> tuple[bytes, str] | None:
        """(bytes, etag) of `key` now, or None."""
        try:
            return t.get_with_etag(key)
        except RemoteNotFound:
            return None

    def delete(self, token: Token, name: str, key: str) -> None:
        """DELETE: check the scope and the protection of refs, then remove the key (absent is fine)."""
        check_write(token, Write(key, None))
        t = self.remote(name, token)
        if t is None:
            return
        if key.startswith("refs/"):
            cur = self.current(t, key)
            if cur is not None:
                check_ref_write(t, token, key, cur[0], None)
        t.delete(key)

    async def list(self, request: Request) -> Response:
        """GET /<name>/list: one page of keys after `after`, under `prefix`."""
        try:
            token = self.authenticate(request)
            check_read(token)
            q = request.query_params
            prefix = check_prefix(q.get("prefix", ""))
            after = q.get("after", "")
            limit = q.get("limit", str(PAGE))
            if not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE or len(after) > 2048:
                raise UsageError(f"list: limit must be 1 to {MAX_PAGE}, after at most 2048 characters")
            t = self.remote(request.path_params["repo"], token)
            keys = [] if t is None else await run_in_threadpool(lambda: [k for k in t.list(prefix) if k > after])
            page = keys[:int(limit)]
            return JSONResponse({"keys": page, "next": page[-1] if len(keys) > len(page) else None})
        except Exception as exc:  # noqa: BLE001 - every failure becomes an answer
            return _response_for(exc)


class HeaderLimit:
    """ASGI middleware: a request whose headers exceed MAX_HEADERS bytes is answered 431 before any handler runs."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and sum(len(k) + len(v) for k, v in scope["headers"]) > MAX_HEADERS:
            await _error(431, "headers_too_large", f"request headers over {MAX_HEADERS} bytes")(scope, receive, send)
            return
        await self.app(scope, receive, send)


def make_app(config: ServeConfig) -> Starlette:
    """The ASGI application serving `config.root`."""
    s = Server(config)
    routes = [Route("/", s.index, methods=["GET"]),
              Route("/{repo}/list", s.list, methods=["GET"]),
              Route("/{repo}/k/{key:path}", s.key, methods=["GET", "HEAD", "PUT", "DELETE"])]

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, "not_found", "no such endpoint: see docs/serve.md for the routes")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return _error(405, "method_not_allowed", f"{request.method[:20]} is not allowed here")

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed},
                    middleware=[Middleware(HeaderLimit)])
    app.state.server = s
    return app
