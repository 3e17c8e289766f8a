"""Shared by the remote lifecycle tests: a checkpoint series, remotes of each kind, a transport that stops at a
barrier (files) before a chosen request, and tree comparison."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import ckstore
from ckstore.transport import Transport, open_transport

from conftest import make_safetensors
from s3servers import BUCKET, WEED_KEY, WEED_SECRET, s3_env

CHUNK = 1 << 14
KINDS = ["directory", "s3-moto", pytest.param("s3-seaweedfs", marks=pytest.mark.integration)]


def make_remote(request, tmp_path: Path, monkeypatch, kind: str, name: str = "remote") -> tuple[str, dict]:
    """(url, options) of a new, empty remote of `kind`."""
    if kind == "directory":
        return str(tmp_path / name), {}
    if kind == "s3-moto":
        s3_env(monkeypatch, tmp_path)
        endpoint = request.getfixturevalue("moto_endpoint")
    else:
        s3_env(monkeypatch, tmp_path, key=WEED_KEY, secret=WEED_SECRET)
        endpoint = request.getfixturevalue("weed_endpoint")
    return f"s3://{BUCKET}/{name}-{uuid.uuid4().hex[:12]}", {"endpoint_url": endpoint}


def transport(url: str, opts: dict) -> Transport:
    """A transport onto the remote, as ckstore opens it."""
    return open_transport(url, **opts) if url.startswith("s3://") else open_transport(url, create=True)


class Series:
    """Checkpoints drifting a little each version (so frames are deltas against the previous version's)."""

    def __init__(self, root: Path, seed: int = 0) -> None:
        self.root, self.rng = root, np.random.default_rng(seed)
        self.state = {"enc.weight": self.rng.standard_normal((64, 256)).astype(np.float32),
                      "head.bias": self.rng.standard_normal(3000).astype(np.float32)}
        self.n = 0

    def next(self) -> Path:
        if self.n:
            for k, v in self.state.items():
                self.state[k] = v + (self.rng.standard_normal(v.shape) * 1e-3).astype(np.float32)
        d = self.root / f"v{self.n}"
        make_safetensors(d / "model.safetensors", self.state)
        (d / "config.json").write_text(json.dumps({"version": self.n}))
        self.n += 1
        return d


def commit_n(repo, series: Series, n: int, branch: str | None = None) -> list[tuple[str, Path]]:
    out = []
    for _ in range(n):
        d = series.next()
        out.append((repo.commit(d, f"version {series.n - 1}", metrics={"loss": 1.0 / series.n}, step=series.n,
                                branch=branch).id, d))
    return out


def new_repo(path: Path):
    return ckstore.Repo.init(path, chunk_size=CHUNK)


def same_tree(a: Path, b: Path) -> bool:
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return fa == fb and all((a / p).read_bytes() == (b / p).read_bytes() for p in fa)


class Barrier(Transport):
    """A real transport that, before the first request matching `when(op, key)`, creates `dir/ready` and waits
    for `dir/go` (a file barrier another process controls)."""

    def __init__(self, inner: Transport, barrier_dir: Path, when) -> None:
        self.inner, self.url, self.dir, self.when = inner, inner.url, Path(barrier_dir), when
        self.persistent, self.etag_reads_content = inner.persistent, inner.etag_reads_content
        self.hit = False

    def _gate(self, op: str, key: str) -> None:
        if not self.hit and self.when(op, key):
            self.hit = True
            (self.dir / "ready").write_text(f"{os.getpid()} {op} {key}")
            deadline = time.monotonic() + 120
            while not (self.dir / "go").exists():
                if time.monotonic() > deadline:
                    raise TimeoutError("barrier never released")
                time.sleep(0.01)

    def get(self, key, start=None, end=None):
        self._gate("get", key)
        return self.inner.get(key, start, end)

    def get_with_etag(self, key):
        self._gate("get", key)
        return self.inner.get_with_etag(key)

    def stat(self, key):
        return self.inner.stat(key)

    def exists(self, key):
        return self.inner.exists(key)

    def put(self, key, data, *, if_absent=False, if_match=None):
        self._gate("put", key)
        return self.inner.put(key, data, if_absent=if_absent, if_match=if_match)

    def list(self, prefix=""):
        self._gate("list", prefix)
        return self.inner.list(prefix)

    def delete(self, key):
        self._gate("delete", key)
        return self.inner.delete(key)

    def close(self):
        self.inner.close()


def wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.01)


def drifting(state: dict, rng, n: int):
    """(version, state) for `n` versions: every tensor moved a little (1e-5 noise) from one version to the next,
    so each chunk of a later version is a delta frame against the one before."""
    for v in range(n):
        if v:
            for k in state:
                state[k] = state[k] + (rng.standard_normal(state[k].shape) * 1e-5).astype(state[k].dtype)
        yield v, state
