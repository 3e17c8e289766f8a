"""What is particular to each transport: URLs, directory locks and layout, S3 errors and settings (the shared
contract is in contract.py, run by test_contract.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from ckstore.errors import (RemoteAccessDenied, RemoteBucketMissing, RemoteError, RemoteUnavailable, UsageError)
from ckstore.transport import (DirectoryTransport, MemoryTransport, forget_memory_transport,
                            open_transport)

from s3servers import BUCKET, WEED_KEY, free_port, s3_env  # noqa: E402

def test_open_transport_urls(tmp_path, monkeypatch):
    d = tmp_path / "r"
    d.mkdir()
    assert isinstance(open_transport(str(d)), DirectoryTransport)
    assert isinstance(open_transport(d), DirectoryTransport)
    t = open_transport(d.as_uri())
    assert isinstance(t, DirectoryTransport) and t.root == d
    monkeypatch.chdir(tmp_path)
    assert open_transport("r").root == d
    m1, m2 = open_transport("memory://shared-test"), open_transport("memory://shared-test")
    assert m1 is m2 and isinstance(m1, MemoryTransport)
    m1.put("k", b"v")
    assert open_transport("memory://shared-test").get("k") == b"v"
    forget_memory_transport("shared-test")
    assert open_transport("memory://shared-test").stat("k") is None
    forget_memory_transport("shared-test")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")       # opening resolves credentials: give some
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    s3 = open_transport("s3://my-bucket/some/prefix/", endpoint_url="http://127.0.0.1:9", region="eu-west-1")
    assert type(s3).__name__ == "S3Transport"
    assert (s3.bucket, s3.prefix, s3.url, s3.region) == ("my-bucket", "some/prefix", "s3://my-bucket/some/prefix",
                                                         "eu-west-1")
    for bad in ("ftp://host/x", "file://otherhost/x", "s3://", "s3://B_/x", "s3://bucket/../x", "memory://",
                "memory://a/b", ""):
        with pytest.raises(UsageError):
            open_transport(bad)


def test_remote_package_does_not_import_obstore():
    code = "import sys, ckstore.transport; print('obstore' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# ------------------------------------------------------------------------------------------- directory
def test_directory_missing_root(tmp_path):
    with pytest.raises(RemoteBucketMissing, match="does not exist"):
        open_transport(tmp_path / "nope")
    t = open_transport(tmp_path / "nope", create=True)
    assert t.root.is_dir()
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(RemoteBucketMissing, match="not a directory"):
        DirectoryTransport(tmp_path / "file")


def test_directory_layout_and_reserved_names(tmp_path):
    t = DirectoryTransport(tmp_path, create=True)
    t.put("packs/ab/x.pack", b"p", if_absent=True)
    t.put("refs/heads/main", b"1")
    assert (tmp_path / "packs" / "ab" / "x.pack").read_bytes() == b"p"
    assert list((tmp_path / "tmp").iterdir()) == []                  # staging left clean
    assert not list(tmp_path.rglob("*.lock"))
    for key in ("tmp/x", "refs/heads/main.lock"):
        with pytest.raises(UsageError, match="reserved"):
            t.put(key, b"x")
    (tmp_path / "tmp" / "junk.tmp").write_bytes(b"crash leftover")
    (tmp_path / "refs" / "heads" / "other.lock").write_bytes(b"")
    assert sorted(t.list()) == ["packs/ab/x.pack", "refs/heads/main"]
    with pytest.raises(RemoteError, match="collide"):
        t.put("refs/heads/main/sub", b"x")                            # a key where a directory is needed


def test_directory_lock_held_by_live_writer_times_out(tmp_path):
    t = DirectoryTransport(tmp_path, lock_timeout=0.3)
    etag = t.put("refs/heads/main", b"1")
    lock = tmp_path / "refs" / "heads" / "main.lock"
    lock.write_text(f"{socket.gethostname()} {os.getpid()} {time.time()}\n")
    start = time.monotonic()
    with pytest.raises(RemoteUnavailable, match="locked by another writer"):
        t.put("refs/heads/main", b"2", if_match=etag)
    assert time.monotonic() - start < 3
    assert t.get("refs/heads/main") == b"1" and lock.exists()


def test_directory_breaks_stale_and_dead_locks(tmp_path):
    t = DirectoryTransport(tmp_path, lock_timeout=0.5)
    etag = t.put("refs/heads/main", b"1")
    lock = tmp_path / "refs" / "heads" / "main.lock"
    lock.write_text("some-other-host 1 0\n")                       # old: left by a crash long ago
    old = time.time() - 120
    os.utime(lock, (old, old))
    etag = t.put("refs/heads/main", b"2", if_match=etag)
    assert not lock.exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{socket.gethostname()} {dead.pid} {time.time()}\n")   # fresh, but its process is gone
    t.put("refs/heads/main", b"3", if_match=etag)
    assert t.get("refs/heads/main") == b"3" and not lock.exists()


def test_directory_concurrent_processes_cas(tmp_path):
    """Two processes bumping one counter by compare-and-swap never lose an update."""
    t = DirectoryTransport(tmp_path)
    t.put("refs/heads/n", b"0")
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from ckstore.transport import DirectoryTransport
from ckstore.errors import RemotePreconditionFailed
t = DirectoryTransport({str(tmp_path)!r})
done = 0
while done < 25:
    data, etag = t.get_with_etag("refs/heads/n")
    try:
        t.put("refs/heads/n", str(int(data) + 1).encode(), if_match=etag)
        done += 1
    except RemotePreconditionFailed:
        pass
"""
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    assert [p.wait(60) for p in procs] == [0, 0]
    assert t.get("refs/heads/n") == b"50"


# ------------------------------------------------------------------------------------------- S3 failures
def test_s3_unreachable_endpoint_is_unavailable(tmp_path, monkeypatch):
    port = free_port()                                             # nothing listens there
    s3_env(monkeypatch, tmp_path, f"http://127.0.0.1:{port}")
    t = open_transport(f"s3://{BUCKET}/x", max_retries=1, retry_timeout=2, connect_timeout=0.5, timeout=2)
    start = time.monotonic()
    for call in (lambda: t.get("refs/heads/main"), lambda: t.put("refs/heads/main", b"1"),
                 lambda: list(t.list("refs"))):
        with pytest.raises(RemoteUnavailable) as info:
            call()
        assert f"127.0.0.1:{port}" in str(info.value) and f"s3://{BUCKET}/x" in str(info.value)
        assert isinstance(info.value.__cause__, Exception)
    assert time.monotonic() - start < 10


def test_s3_missing_bucket(moto_endpoint, tmp_path, monkeypatch):
    s3_env(monkeypatch, tmp_path, moto_endpoint)
    t = open_transport("s3://no-such-bucket/p", max_retries=0)
    for call in (lambda: t.get("refs/heads/main"), lambda: t.put("refs/heads/main", b"1"),
                 lambda: t.put("refs/heads/main", b"1", if_absent=True), lambda: list(t.list("refs"))):
        with pytest.raises(RemoteBucketMissing, match="no-such-bucket"):
            call()


def test_s3_wrong_credentials(moto_endpoint, tmp_path, monkeypatch):
    s3_env(monkeypatch, tmp_path, moto_endpoint, key="AKIAWRONGWRONGWRONG1", secret="wrong")
    t = open_transport(f"s3://{BUCKET}/p", max_retries=0)

    def set_auth(count: str) -> None:
        req = urllib.request.Request(f"{moto_endpoint}/moto-api/reset-auth", data=count.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=10).read()

    set_auth("0")                                                  # moto checks credentials from now on
    try:
        for call in (lambda: t.get("refs/heads/main"), lambda: t.put("refs/heads/main", b"1")):
            with pytest.raises(RemoteAccessDenied) as info:
                call()
            assert f"s3://{BUCKET}/p" in str(info.value)
    finally:
        set_auth("inf")


def test_s3_settings_from_profile(moto_endpoint, tmp_path, monkeypatch):
    s3_env(monkeypatch, tmp_path, moto_endpoint)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var)
    (tmp_path / "no-aws-credentials").write_text("[ck]\naws_access_key_id = AKIAPROFILE\n"
                                                 "aws_secret_access_key = profilesecret\n")
    (tmp_path / "no-aws-config").write_text(f"[profile ck]\nregion = eu-central-1\nendpoint_url = {moto_endpoint}\n")
    monkeypatch.setenv("AWS_PROFILE", "ck")
    t = open_transport(f"s3://{BUCKET}/profile-{uuid.uuid4().hex[:8]}")
    assert (t.region, t.endpoint) == ("eu-central-1", moto_endpoint)
    t.put("refs/heads/main", b"1")
    assert t.get("refs/heads/main") == b"1"
    with pytest.raises(UsageError, match="nope"):
        open_transport(f"s3://{BUCKET}/p", profile="nope")


@pytest.mark.integration
def test_s3_wrong_credentials_seaweedfs(weed_endpoint, tmp_path, monkeypatch):
    s3_env(monkeypatch, tmp_path, weed_endpoint, key=WEED_KEY, secret="not-the-secret")
    t = open_transport(f"s3://{BUCKET}/p", max_retries=0)
    with pytest.raises(RemoteAccessDenied):
        t.get("refs/heads/main")
    with pytest.raises(RemoteAccessDenied):
        t.put("refs/heads/main", b"1")
