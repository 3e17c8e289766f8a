"""The local web view's HTTP server: static assets from the package, the JSON API, and who may ask.

The standard library's threading HTTP server is enough here: the view is read-only, serves one user on loopback,
and its answers come from the repository, not from the network stack; an ASGI stack would add dependencies and
nothing a page needs. Requests are answered one at a time against one open repository (a lock), so LMDB sees a
single reader and long views never interleave.

Who may ask: on loopback, anyone on this machine (as with the files themselves) — but only with a Host header
naming loopback, so a web page elsewhere cannot reach the API through DNS rebinding. Bound anywhere else (or
given --token), every request needs the token printed at start (a `?token=` query once, then a cookie, or an
`Authorization: Bearer` header).
"""

from __future__ import annotations

import hmac
import json
import mimetypes
import secrets
import sys
import threading
import traceback
import urllib.parse
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Callable

from ..errors import CkstoreError, UsageError
from ..model.urls import is_loopback
from .routes import Routes

STATIC = "static"
_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'")


def asset(name: str) -> bytes | None:
    """A file shipped in ckstore/ui/static, or None (names with a path part are refused)."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    ref = resources.files(__package__).joinpath(STATIC, name)
    return ref.read_bytes() if ref.is_file() else None


class ViewServer(ThreadingHTTPServer):
    """The server, holding the routes, the lock around the repository and the token (None on loopback)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], routes: Routes, token: str | None) -> None:
        super().__init__(address, Handler)
        self.routes, self.token, self.lock = routes, token or None, threading.Lock()

    @property
    def url(self) -> str:
        """Where a browser finds the view (with the token when one is needed)."""
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/" + (f"?token={self.token}" if self.token else "")


class Handler(BaseHTTPRequestHandler):
    """GET and HEAD only: the view never changes the repository."""

    server: ViewServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet."""  # a page load is dozens of requests; the terminal keeps the URL and errors, not an access log

    def do_HEAD(self) -> None:  # noqa: N802 - the base class's naming
        """Headers only."""
        self._answer(head=True)

    def do_GET(self) -> None:  # noqa: N802
        """A page asset or an API answer."""
        self._answer(head=False)

    def _refuse(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b'{"error": "the view is read-only"}', "application/json",
                   extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

    def _answer(self, head: bool) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        if not self._allowed(query):
            return
        cookie = None
        if self.server.token and query.get("token"):
            cookie = f"ckstore_token={self.server.token}; HttpOnly; SameSite=Strict; Path=/"
        if url.path.startswith("/api/"):
            self._api(url.path[len("/api/"):], query, head, cookie)
            return
        if url.path in ("/", "/index.html"):
            name = "index.html"
        elif url.path.startswith("/static/"):
            name = url.path[len("/static/"):]
        else:
            name = ""  # nothing else is served
        body = asset(name)
        if body is None:
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain", head=head)
            return
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        self._send(HTTPStatus.OK, body, kind, head=head, cookie=cookie)

    def _allowed(self, query: dict[str, str]) -> bool:
        """The Host header names loopback (or the token is right): otherwise 403/401 and False."""
        token = self.server.token
        if token is None:
            if not is_loopback(_host_name(self.headers.get("Host") or "")):
                self._send(HTTPStatus.FORBIDDEN, b'{"error": "only loopback host names are served"}',
                           "application/json")
                return False
            return True
        given = query.get("token") or _bearer(self.headers.get("Authorization")) or _cookie(
            self.headers.get("Cookie"))
        if given and hmac.compare_digest(given.encode(), token.encode()):
            return True
        self._send(HTTPStatus.UNAUTHORIZED, b'{"error": "a token is needed", "hint": "open the URL ckstore ui '
                                            b'printed, with its ?token="}', "application/json")
        return False

    def _api(self, path: str, query: dict[str, str], head: bool, cookie: str | None) -> None:
        handler: Callable[..., Any] | None = self.server.routes.find(path)
        if handler is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no API endpoint /api/{path}"}, head)
            return
        try:
            with self.server.lock:
                data = handler(query)
            status = HTTPStatus.OK
        except UsageError as exc:
            status, data = HTTPStatus.BAD_REQUEST, {"error": str(exc), "hint": exc.hint}
        except CkstoreError as exc:
            status = HTTPStatus.NOT_FOUND if type(exc).__name__ == "UnknownRevision" else HTTPStatus.BAD_REQUEST
            data = {"error": str(exc), "hint": exc.hint}
        except Exception as exc:  # a bug must not kill the page's request silently: say so, keep serving
            traceback.print_exc(file=sys.stderr)
            status, data = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {exc}",
                                                              "hint": "the terminal running ckstore ui has details"}
        self._json(status, data, head, cookie)

    def _json(self, status: HTTPStatus, data: Any, head: bool, cookie: str | None = None) -> None:
        body = json.dumps(data, default=str, allow_nan=False, separators=(",", ":")).encode()
        self._send(status, body, "application/json", head=head, cookie=cookie)

    def _send(self, status: HTTPStatus, body: bytes, kind: str, *, head: bool = False, cookie: str | None = None,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind + ("; charset=utf-8" if kind.startswith(("text/", "application/j"))
                                                 else ""))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        if cookie:
            self.send_header("Set-Cookie", cookie)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)


def _host_name(header: str) -> str:
    """The host part of a Host header ("[::1]:8471" -> "::1", "localhost:8471" -> "localhost")."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


def _cookie(header: str | None) -> str | None:
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # a malformed Cookie header is no token
        return None
    morsel = jar.get("ckstore_token")
    return morsel.value if morsel else None


def make_server(routes: Routes, host: str = "127.0.0.1", port: int = 8471, token: str | None = None) -> ViewServer:
    """A server bound to host:port (port 0: any free one). A given token is always required; off loopback one
    is required anyway (a fresh random one unless given)."""
    if not is_loopback(host) and not token:
        token = secrets.token_urlsafe(24)
    try:
        return ViewServer((host, port), routes, token)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         hint="pick another --port (0 picks a free one)") from exc
