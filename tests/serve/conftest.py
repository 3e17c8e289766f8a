"""A real `ckstore serve` on a loopback port (uvicorn on a thread), its tokens, and repositories that push to it.
Only the server's wall clock is ours to move (token expiry)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import ckstore
from ckstore.serve.app import ServeConfig
from ckstore.serve.server import BackgroundServer
from ckstore.serve.tokens import TokenStore, state_dir
from ckstore.transport.http import HttpTransport


@dataclass
class Clock:
    """The server's wall clock: real time plus an offset the test moves."""

    offset: float = 0.0

    def __call__(self) -> float:
        import time
        return time.time() + self.offset


@dataclass
class Served:
    """A running server over `root`."""

    root: Path
    server: BackgroundServer
    clock: Clock
    tokens: TokenStore
    scheme: str = "http"
    host: str = "127.0.0.1"
    admin: str = field(default="")

    @property
    def base(self) -> str:
        """scheme://host:port."""
        return f"{self.scheme}://{self.host}:{self.server.port}"

    def url(self, name: str) -> str:
        """The URL of the remote `name`."""
        return f"{self.base}/{name}"

    def token(self, *scopes: str, repos: list[str] | None = None, expires_in: int | None = None) -> str:
        """A new token's secret."""
        return self.tokens.add(f"t-{uuid.uuid4().hex[:10]}", list(scopes), repos, expires_in)[1]

    def client(self, name: str, secret: str | None = None, **options) -> HttpTransport:
        """An HttpTransport onto the remote `name` (default: with the admin token)."""
        return HttpTransport(self.url(name), token=secret if secret is not None else self.admin, **options)


def start(root: Path, **config) -> Served:
    """A server over `root` with an admin token, the ServeConfig settings given."""
    root.mkdir(parents=True, exist_ok=True)
    clock = Clock()
    server = BackgroundServer.start(ServeConfig(root, clock=clock, **config))
    served = Served(root, server, clock, TokenStore(state_dir(root), clock))
    served.admin = served.token("admin")
    return served


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One server for the module (each test uses its own remote names)."""
    s = start(tmp_path_factory.mktemp("served"))
    yield s
    s.server.stop()


def new_repo(path: Path, seed: int = 0) -> ckstore.Repo:
    """A repository with two commits on main (small tensors, so a push moves a pack, objects and refs)."""
    repo = ckstore.Repo.init(path)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    repo.commit({"w": w, "b": np.arange(64, dtype=np.float32)}, "first", capture_env=False)
    repo.commit({"w": w + 1, "b": np.arange(64, dtype=np.float32)}, "second", capture_env=False)
    return repo


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under a served remote's directory (tmp/ and locks aside): what a refused request must not
    change."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] not in ("tmp", "locks")}
