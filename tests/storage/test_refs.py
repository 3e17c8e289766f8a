"""Refs, lock files and the audit log on real files; metadata files read from disk."""

import os

import pytest

from ckstore.engine.capture import read_meta_file
from ckstore.errors import InvalidMetadata
from ckstore.fs.locks import file_lock
from ckstore.storage.audit import AuditLog
from ckstore.storage.refs import RefStore


def test_meta_files(tmp_path):
    (tmp_path / "m.json").write_text('{"params": {"lr": 0.1}}')
    (tmp_path / "m.toml").write_text('[params]\nlr = 0.1\n')
    (tmp_path / "m.yaml").write_text('params:\n  lr: 0.1\n')
    for name in ("m.json", "m.toml", "m.yaml"):
        assert read_meta_file(tmp_path / name) == {"params": {"lr": 0.1}}
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(InvalidMetadata, match="mapping"):
        read_meta_file(tmp_path / "bad.json")


def test_ref_compare_and_swap_and_audit(tmp_path):
    refs = RefStore(tmp_path)
    (tmp_path / "HEAD").write_text("ref: refs/heads/main\n")
    a, b = b"\1" * 32, b"\2" * 32
    refs.update("refs/heads/main", a, None, action="commit", message="first")
    from ckstore.errors import RefConflict
    with pytest.raises(RefConflict):
        refs.update("refs/heads/main", b, None, action="commit")
    refs.update("refs/heads/main", b, a, action="commit", message="second")
    assert refs.read("refs/heads/main") == b
    entries = refs.audit.entries()
    assert [(e.old, e.new, e.message) for e in entries] == [(None, a.hex(), "first"), (a.hex(), b.hex(), "second")]
    assert refs.audit.verify() == []


def test_stale_lock_of_dead_process_is_broken(tmp_path):
    import subprocess
    import socket
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = tmp_path / "x.lock"
    lock.write_text(f"{socket.gethostname()} {int(dead.stdout)} 0\n")
    with file_lock(lock, wait=1):
        assert lock.read_text().split()[1] == str(__import__("os").getpid())
    assert not lock.exists()


def test_live_lock_times_out(tmp_path):
    import socket
    from ckstore.errors import LockTimeout
    lock = tmp_path / "x.lock"
    lock.write_text(f"{socket.gethostname()} {os.getppid()} 0\n")
    with pytest.raises(LockTimeout):
        with file_lock(lock, wait=0.05):
            pass
    assert lock.exists()


def test_audit_tamper_detected(tmp_path):
    log = AuditLog(tmp_path / "audit")
    for i in range(3):
        log.append("commit", "refs/heads/main", None, bytes([i]) * 32, f"m{i}")
    text = (tmp_path / "audit").read_text()
    (tmp_path / "audit").write_text(text.replace('"m1"', '"mX"'))
    assert any("altered" in p for p in log.verify())
    lines = text.splitlines(keepends=True)
    (tmp_path / "audit").write_text(lines[0] + lines[2])
    assert any("chain" in p for p in log.verify())
    (tmp_path / "audit").write_text(text[:-10])
    assert any("truncated" in p for p in log.verify())
