"""T11 stalls (CI tier): a remote whose requests hang far longer than the per-request timeout. The command must not
hang: each stalled request is abandoned after `timeout` seconds (RetryingTransport), reported with a RemoteTimedOut
warning, retried as a transient fault; a remote that never answers fails in bounded time with nothing changed.
Real transports (a directory; S3 against a socket that accepts and never answers), stalls injected by
tests/faults.Faulty; tests/soak/test_soak_sync.py runs the 20-seed tier."""

from __future__ import annotations

import socket
import threading
import time
import warnings
from pathlib import Path

import pytest

import ckstore
from ckstore.errors import RemoteUnavailable
from ckstore.sync import fetch as fetch_mod, push as push_mod
from ckstore.transport import open_transport
from ckstore.transport.retry import RemoteTimedOut, RetryingTransport
from ckstore.transport.s3 import S3Transport

from faults import Faulty
import test_sync as ts
from test_sync import quick_retries  # noqa: F401  (autouse)

TIMEOUT = 0.3  # seconds a request may take here; each stall lasts STALL
STALL = 120.0


def stalled(inner, **kw) -> tuple[Faulty, RetryingTransport]:
    faulty = Faulty(inner, stall_seconds=STALL, **kw)
    return faulty, RetryingTransport(faulty, timeout=TIMEOUT, backoff=0.01)


def stalled_fetch(tmp: Path, every: int) -> dict:
    """B fetches A's newest push through a directory remote whose every `every`-th request stalls."""
    a, b, url, _ = ts._pushed_pair(tmp)
    faulty, retrying = stalled(open_transport(url), stall_every=every)
    try:
        t0 = time.monotonic()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            fetch_mod.fetch(b.engine, transport=retrying)
        elapsed = time.monotonic() - t0
        faulty.release()
        assert faulty.stalled >= 1 and retrying.timeouts >= 1 and retrying.retries >= retrying.timeouts
        assert elapsed < STALL / 4, f"the fetch waited out a stall ({elapsed:.1f} s)"
        reported = [w for w in seen if issubclass(w.category, RemoteTimedOut)]
        assert len(reported) == retrying.timeouts and "timed out after 0.3 s" in str(reported[0].message)
        b.pull()
        assert b.resolve("main") == a.resolve("main")
        assert b.fsck(read_data=True).ok
        for c in b.log("main"):
            b.checkout(c.id, tmp / f"b-{c.id[:8]}")
            a.checkout(c.id, tmp / f"a-{c.id[:8]}")
            assert ts.same_tree(tmp / f"b-{c.id[:8]}", tmp / f"a-{c.id[:8]}")
        return {"stalled": faulty.stalled, "timeouts": retrying.timeouts, "seconds": elapsed}
    finally:
        faulty.release()
        a.close()
        b.close()


@pytest.mark.parametrize("every", [4])
def test_stalled_fetch_times_out_retries_and_completes(tmp_path: Path, every: int) -> None:
    stalled_fetch(tmp_path, every)


def test_stalled_push_times_out_retries_and_completes(tmp_path: Path) -> None:
    url = str(tmp_path / "remote")
    with ts.new_repo(tmp_path / "a") as a:
        versions = ts.commit_series(a, ts.Series(tmp_path / "ck"), 2)
        a.remote_add("origin", url)
        faulty, retrying = stalled(ts.transport_for(url, {}, create=True), stall_every=3)
        t0 = time.monotonic()
        with pytest.warns(RemoteTimedOut):
            push_mod.push(a.engine, "origin", transport=retrying)
        faulty.release()
        assert time.monotonic() - t0 < STALL / 4 and retrying.timeouts >= 1
    with ckstore.clone(url, tmp_path / "fresh") as fresh:
        assert fresh.fsck(read_data=True).ok
        for i, (oid, src) in enumerate(versions):
            fresh.checkout(oid, tmp_path / f"out{i}")
            assert ts.same_tree(src, tmp_path / f"out{i}")


def test_a_remote_that_never_answers_fails_in_bounded_time(tmp_path: Path) -> None:
    a, b, url, _ = ts._pushed_pair(tmp_path)
    faulty, retrying = stalled(open_transport(url), stall_first=10**9)
    try:
        before = ts.snapshot(b)
        t0 = time.monotonic()
        with pytest.warns(RemoteTimedOut), pytest.raises(RemoteUnavailable) as info:
            fetch_mod.fetch(b.engine, transport=retrying)
        assert time.monotonic() - t0 < retrying.attempts * (TIMEOUT + 1) + 2
        assert "timed out after 0.3 s" in str(info.value) and f"after {retrying.attempts} attempts" in str(info.value)
        assert ts.snapshot(b) == before and b.fsck(read_data=True).ok
        assert not list((b.dir / "tmp").iterdir())
    finally:
        faulty.release()
        a.close()
        b.close()


def test_no_timeout_means_no_deadline(tmp_path: Path) -> None:
    """timeout=0 calls straight through (no thread); a slow request is waited for."""
    faulty = Faulty(open_transport(str(tmp_path / "r"), create=True), stall_first=1, stall_seconds=0.5)
    t = RetryingTransport(faulty, timeout=0)
    t.put("config", b"{}")
    assert t.get("config") == b"{}" and t.timeouts == 0 and faulty.stalled == 1


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers: a stalled S3 endpoint."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    conns, stop = [], threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        th.join(2)
        for c in conns:
            c.close()
        srv.close()


def test_s3_request_to_a_silent_endpoint_times_out(silent_server: str, monkeypatch, tmp_path: Path) -> None:
    """The S3 transport's own request timeout, and the per-request deadline above it: both bound the wait."""
    from s3servers import s3_env
    s3_env(monkeypatch, tmp_path)
    s3 = S3Transport("s3://bucket/p", endpoint_url=silent_server, timeout=0.5, connect_timeout=0.5, max_retries=0,
                     retry_timeout=1)
    t0 = time.monotonic()
    with pytest.raises(RemoteUnavailable):
        s3.get("config")
    assert time.monotonic() - t0 < 10
    slow = S3Transport("s3://bucket/p", endpoint_url=silent_server, timeout=STALL, max_retries=0, retry_timeout=1)
    t = RetryingTransport(slow, timeout=TIMEOUT, attempts=2, backoff=0.01)
    t0 = time.monotonic()
    with pytest.warns(RemoteTimedOut), pytest.raises(RemoteUnavailable, match="timed out after"):
        t.get("config")
    assert time.monotonic() - t0 < 5 and t.timeouts == 2
