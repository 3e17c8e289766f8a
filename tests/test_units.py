"""Small pure pieces: revision syntax, graph walks, path safety, ref names, metadata parsing, audit chain."""

import os

import pytest

from ckstore.engine.capture import read_meta_file
from ckstore.model import graph, metadata, revisions
from ckstore.errors import InvalidMetadata, UnsafePath, UsageError
from ckstore.model.paths import check_path, check_paths
from ckstore.fs.locks import file_lock
from ckstore.model.refnames import check_ref_name
from ckstore.storage.audit import AuditLog
from ckstore.storage.refs import RefStore


def test_parse_rev():
    assert revisions.parse("main") == ("main", [])
    assert revisions.parse("main~2^") == ("main", [("~", 2), ("^", 1)])
    assert revisions.parse("v1.0^2~") == ("v1.0", [("^", 2), ("~", 1)])
    assert revisions.parse("feature/x~10") == ("feature/x", [("~", 10)])


def test_walk_and_merge_base():
    parents = {b"d": (b"b", b"c"), b"b": (b"a",), b"c": (b"a",), b"a": ()}
    times = {b"a": 1, b"b": 2, b"c": 3, b"d": 4}
    order = list(graph.walk([b"d"], parents.__getitem__, times.__getitem__))
    assert order == [b"d", b"c", b"b", b"a"]
    assert graph.merge_base(b"b", b"c", parents.__getitem__, times.__getitem__) == b"a"
    assert graph.is_ancestor(b"a", b"d", parents.__getitem__)
    assert not graph.is_ancestor(b"c", b"b", parents.__getitem__)


@pytest.mark.parametrize("bad", ["../x", "/etc/x", "a/../../b", "C:\\x", "C:x", ".ckstore/config", "a/.git/x",
                                 "a\0b", "", "a//b", "./a", "a/", "x" * 5000, ".CKSTORE/x", "a\\b"])
def test_unsafe_paths(bad):
    with pytest.raises(UnsafePath):
        check_path(bad)


def test_safe_paths_and_collisions():
    check_paths(["model.safetensors", "tokenizer/vocab.json", "a.b/c..d", "..."[:2] + "x"])
    with pytest.raises(UnsafePath, match="case"):
        check_paths(["Model.bin", "model.bin"])
    with pytest.raises(UnsafePath, match="file and a directory"):
        check_paths(["a", "a/b"])


@pytest.mark.parametrize("bad", ["", "a..b", ".hidden", "a/.x", "x.lock", "a b", "a~1", "a^", "a:b", "a//b", "a/",
                                 "/a", "a\\b", "a@{1}", "x?"])
def test_bad_ref_names(bad):
    with pytest.raises(UsageError):
        check_ref_name(bad)


def test_metadata_typing():
    parsed = metadata.parse_assignments(["params.lr=3e-4", "params.layers=12", "flag=true", "name=resnet",
                                         "data.splits=[1,2]", "nothing=null", "inf=inf"])
    assert parsed == {"params": {"lr": 3e-4, "layers": 12}, "flag": True, "name": "resnet",
                      "data": {"splits": [1, 2]}, "nothing": None, "inf": "inf"}
    sections = metadata.split_sections(parsed)
    assert sections["extra"] == {"flag": True, "name": "resnet", "nothing": None, "inf": "inf"}
    with pytest.raises(InvalidMetadata):
        metadata.parse_assignments(["novalue"])
    with pytest.raises(InvalidMetadata):
        metadata.split_sections({"metrics": {"loss": "low"}})
    with pytest.raises(InvalidMetadata):
        metadata.parse_assignments(["a=1", "a.b=2"])


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
    import os
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


def _status_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def _rss_file_kib() -> int:
    return _status_kib("RssFile")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_drop_range_leaves_the_resident_set_but_not_the_data(tmp_path):
    from ckstore.formats.base import drop_range, map_file
    data = os.urandom(1 << 20) * 32
    (tmp_path / "f").write_bytes(data)
    view = map_file(tmp_path / "f")
    before = _rss_file_kib()
    assert bytes(view[::4096]) == data[::4096]  # touch every page
    touched = _rss_file_kib()
    assert touched - before > 24 * 1024
    pos = 0
    for k in range((3 << 20) + 5, len(view) + (3 << 20), 3 << 20):  # unaligned ends, as chunk ends are
        pos = drop_range(view.obj, pos, k)
        assert pos % 4096 == 0 or pos == len(view)
    assert pos == len(view)
    assert _rss_file_kib() < touched - 24 * 1024
    assert bytes(view) == data  # the bytes are all still there


def test_commit_of_a_mapped_file_leaves_little_of_it_resident(tmp_path):
    """The commit reads a 48 MiB file through its mapping; afterwards hardly any of it is resident."""
    import numpy as np
    from safetensors.numpy import save_file
    from ckstore import Repo
    path = tmp_path / "m.safetensors"
    save_file({f"t{i}": np.random.default_rng(i).standard_normal(1 << 20).astype(np.float32) for i in range(12)},
              path)
    with Repo.init(tmp_path / "r") as repo:
        repo.commit({"warm": np.zeros(4, np.float32)}, "imports and pool up", capture_env=False)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # restart the peak-RSS counter (VmHWM) from the current RSS
        before = _status_kib("VmRSS")
        repo.commit(path, "v0", capture_env=False)
        print("peak above start KiB", _status_kib("VmHWM") - before)
        assert _status_kib("VmHWM") - before < 40 * 1024  # the file is 48 MiB
        out = tmp_path / "out"
        repo.checkout("HEAD", out)
        assert (out / "m.safetensors").read_bytes() == path.read_bytes()
        # the same file again under a new path, after a small file: every chunk is known, so the two workers
        # only hash and would outrun the one whole-file hash; the stream waits for it instead of mapping it all
        other = tmp_path / "copy"
        other.mkdir()
        (other / "a.json").write_text("{}")
        (other / "m.safetensors").write_bytes(path.read_bytes())
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_kib("VmRSS")
        repo.commit(other, "v1", capture_env=False)
        assert _status_kib("VmHWM") - before < 40 * 1024
        assert repo.show().new_bytes < 64 * 1024
