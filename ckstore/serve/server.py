"""Running the served remote: uvicorn over the Starlette app, in the foreground (`ckstore serve`) or on a
background thread (tests, embedding), with TLS from a certificate and key file."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from ..errors import UsageError
from .app import ServeConfig, make_app

MAX_HEADER_BYTES = 16 * 1024     # an incomplete request head larger than this is refused (h11 answers 400)
KEEP_ALIVE = 30                  # seconds an idle connection stays open (clients reuse one per thread)
MAX_CONNECTIONS = 256            # beyond this uvicorn answers 503 rather than queueing without bound
GRACE = 10                       # seconds a shutdown waits for requests under way


def parse_listen(text: str) -> tuple[str, int]:
    """"host:port" ("[::1]:8470" for IPv6) -> (host, port); UsageError for anything else."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"cannot read --listen {text!r}", hint="write HOST:PORT, e.g. 127.0.0.1:8470")
    return host.strip("[]"), int(port)


def check_root(root: str | os.PathLike) -> Path:
    """The served root as an absolute path; UsageError unless it is a directory."""
    path = Path(os.path.abspath(os.fspath(root)))
    if not path.is_dir():
        raise UsageError(f"{path} is not a directory", hint="create it (an empty one serves no remotes yet)")
    return path


def uvicorn_config(config: ServeConfig, host: str, port: int, tls_cert: str | None = None,
                   tls_key: str | None = None) -> uvicorn.Config:
    """uvicorn's settings for a served root: h11, no lifespan or websockets, bounded heads and connections."""
    if bool(tls_cert) != bool(tls_key):
        raise UsageError("give --tls-cert and --tls-key together")
    for f in (tls_cert, tls_key):
        if f and not os.path.isfile(f):
            raise UsageError(f"no such file: {f}")
    return uvicorn.Config(make_app(config), host=host, port=port, http="h11", ws="none", lifespan="off",
                          ssl_certfile=tls_cert, ssl_keyfile=tls_key, h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                          timeout_keep_alive=KEEP_ALIVE, limit_concurrency=MAX_CONNECTIONS, server_header=False,
                          timeout_graceful_shutdown=GRACE, access_log=False, log_level="warning")


@dataclass
class BackgroundServer:
    """A served root on a thread of this process, bound to a port picked when it starts (0: any free one)."""

    server: uvicorn.Server
    thread: threading.Thread
    host: str
    port: int

    @classmethod
    def start(cls, config: ServeConfig, host: str = "127.0.0.1", port: int = 0, tls_cert: str | None = None,
              tls_key: str | None = None, timeout: float = 10.0) -> "BackgroundServer":
        """Bind, start serving and return once the server accepts connections."""
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        server = uvicorn.Server(uvicorn_config(config, host, sock.getsockname()[1], tls_cert, tls_key))
        thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True,
                                  name="ckstore-serve")
        thread.start()
        waited = 0.0
        while not server.started and thread.is_alive() and waited < timeout:
            threading.Event().wait(0.01)
            waited += 0.01
        if not server.started:
            raise RuntimeError(f"the server on {host}:{sock.getsockname()[1]} did not start")
        return cls(server, thread, host, sock.getsockname()[1])

    def stop(self) -> None:
        """Stop accepting, let requests under way finish, and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(GRACE + 5)


def serve_forever(config: ServeConfig, host: str, port: int, tls_cert: str | None = None,
                  tls_key: str | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully (requests under way finish)."""
    uvicorn.Server(uvicorn_config(config, host, port, tls_cert, tls_key)).run()
