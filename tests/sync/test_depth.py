"""`clone --depth N`: every commit's metadata, but only the chunks the newest N commits of each branch need (with
the delta bases of their frames); older data comes on demand like any partial clone, and later pulls bring the new
tips' chunks, not the history between.

Remotes are real (a directory under tmp_path and a moto S3 server on loopback); the killed clone is a child
process stopped at a file barrier and killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ckstore
from ckstore.errors import AlreadyExists, IncompleteClone, UsageError
from ckstore.model import codec
from ckstore.storage import remotes
from ckstore.storage.packs import pack_path
from ckstore.sync import select

from conftest import make_safetensors
from remote_helpers import make_remote, same_tree, wait_for

CHUNK = 1 << 16
SLACK = 64 * 1024  # objects, refs, index files and the small drifting tensor's delta bases


@pytest.fixture(autouse=True)
def author(monkeypatch):
    monkeypatch.setenv("CKSTORE_AUTHOR", "tester@example")


class Changing:
    """Versions of six 256 KiB tensors, three of them replaced by fresh values each version (incompressible, so
    no delta pays), and a small tensor drifting a little (stored as delta frames against its parent)."""

    def __init__(self, root: Path) -> None:
        self.root, self.rng, self.n = root, np.random.default_rng(7), 0
        self.state = {f"layers.{i}.weight": self._fresh() for i in range(6)}
        self.state["norm.scale"] = self.rng.standard_normal(4096).astype(np.float32)

    def _fresh(self) -> np.ndarray:
        return self.rng.standard_normal((256, 256)).astype(np.float32)

    def next(self) -> Path:
        """The next version as a directory (model.safetensors + config.json)."""
        if self.n:
            for i in range(3):
                self.state[f"layers.{(self.n * 3 + i) % 6}.weight"] = self._fresh()
            drift = (self.rng.standard_normal(4096) * 1e-3).astype(np.float32)
            self.state["norm.scale"] = self.state["norm.scale"] + drift
        d = self.root / f"v{self.n}"
        make_safetensors(d / "model.safetensors", self.state)
        (d / "config.json").write_text(json.dumps({"version": self.n}))
        self.n += 1
        return d


def commit(repo, series: Changing) -> tuple[str, Path]:
    src = series.next()
    return repo.commit(src, f"version {series.n - 1}").id, src


def needed(repo, *revs: str) -> set[bytes]:
    """The chunks checking out `revs` reads: their manifests' chunks and every delta base behind them, read from
    the frame headers in the source's packs (other code than the fetch's)."""
    store = repo.engine.store
    todo = [c for r in revs for c in (lambda m: m.file_chunks(m.files))(repo.engine.manifest_of(
        repo.engine.resolve(r)))]
    out: set[bytes] = set()
    while todo:
        c = todo.pop()
        if c in out:
            continue
        out.add(c)
        loc = store.index.get(c)
        with open(pack_path(store.packs_dir, loc.pack), "rb") as f:
            f.seek(loc.offset)
            base = codec.frame_base(f.read(loc.length))
        if base is not None:
            todo.append(base)
    return out


def local_chunks(repo) -> set[bytes]:
    store = repo.engine.store
    return {c for p in store.pack_ids() for c in store.index.pack_locations(p)}


@pytest.fixture
def pushed(tmp_path):
    """(source repository path, directory remote URL, versions [(id, source dir)]): four versions pushed."""
    series = Changing(tmp_path / "ck")
    url = str(tmp_path / "remote")
    with ckstore.Repo.init(tmp_path / "a", chunk_size=CHUNK) as a:
        versions = [commit(a, series) for _ in range(4)]
        a.remote_add("origin", url)
        a.push()
    return tmp_path / "a", url, versions, series


@pytest.mark.parametrize("kind", ["directory", "s3-moto"])
def test_depth_one_clone_brings_the_newest_version_and_the_rest_on_demand(request, tmp_path, monkeypatch, kind):
    url, opts = make_remote(request, tmp_path, monkeypatch, kind)
    series = Changing(tmp_path / "ck")
    with ckstore.Repo.init(tmp_path / "a", chunk_size=CHUNK) as a:
        versions = [commit(a, series) for _ in range(4)]
        a.remote_add("origin", url, **opts)
        a.push()
        newest = a.show(versions[-1][0]).stored_bytes
        everything = sum(a.show(v).new_bytes for v, _ in versions)
        want = needed(a, versions[-1][0])
        m = a.engine.manifest_of(a.engine.resolve(versions[-1][0]))
        assert want - set(m.file_chunks(m.files)), "the drifting tensor should need delta bases of older commits"
    with ckstore.clone(url, tmp_path / "full", **opts) as full:
        whole = full.last_transfer.bytes_received
    with ckstore.clone(url, tmp_path / "c", depth=1, **opts) as c:
        moved = c.last_transfer.bytes_received
        print(f"\n[{kind}] depth 1: {moved} bytes received; full clone {whole}; newest version stores {newest}, "
              f"the repository {everything}")
        assert moved < newest * 1.2 + SLACK, (moved, newest)
        assert moved < 0.6 * whole and whole > everything
        assert c.remote_list()[0].partial == {"depth": 1}
        assert [e.id for e in c.log()] == [v for v, _ in reversed(versions)]  # every commit's metadata
        assert local_chunks(c) == want  # the newest's chunks and their delta bases, nothing else

        packs = sorted(c.engine.store.pack_ids())
        c.checkout("HEAD", tmp_path / "out-new")                    # the newest: no transfer at all
        assert same_tree(versions[-1][1], tmp_path / "out-new")
        assert c.last_transfer.action == "clone" and sorted(c.engine.store.pack_ids()) == packs

        report = c.fsck(read_data=True)                             # not fetched yet: expected, not damage
        assert report.ok and report.not_fetched > 0, report.problems
        with pytest.raises(UsageError, match="partial clone"):   # its unfetched chunks live only on the remote
            c.gc()
        c.checkout(versions[0][0], tmp_path / "out-old")            # the oldest: on demand
        assert same_tree(versions[0][1], tmp_path / "out-old")
        assert c.last_transfer.action == "fetch-missing" and c.last_transfer.bytes_received > 0
        assert c.fsck(read_data=True).ok


def test_pull_after_depth_clone_brings_the_new_tip_not_the_history_between(pushed, tmp_path):
    src, url, versions, series = pushed
    with ckstore.clone(url, tmp_path / "c", depth=1) as c, ckstore.Repo.open(src) as a:
        new = [commit(a, series) for _ in range(3)]
        a.push()
        (tip, tip_src), history = new[-1], sum(a.show(v).new_bytes for v, _ in new)
        tip_stored = a.show(tip).stored_bytes
        pulled = c.pull()
        print(f"\npull after depth 1: {pulled.bytes_received} bytes received; the new tip stores {tip_stored}, "
              f"the three new versions {history}")
        assert pulled.commits == 3 and c.resolve("main") == tip
        assert pulled.bytes_received < tip_stored * 1.2 + SLACK, (pulled.bytes_received, tip_stored)
        assert pulled.bytes_received < 0.75 * history
        assert local_chunks(c) == needed(a, versions[-1][0], tip), "the commits between stay remote"
        packs = sorted(c.engine.store.pack_ids())
        c.checkout("HEAD", tmp_path / "out")
        assert same_tree(tip_src, tmp_path / "out") and sorted(c.engine.store.pack_ids()) == packs
        c.checkout("HEAD~1", tmp_path / "out-between")
        assert same_tree(new[1][1], tmp_path / "out-between") and c.last_transfer.action == "fetch-missing"
        assert c.fsck(read_data=True).ok


def test_depth_two_and_depth_with_a_tensor_filter(pushed, tmp_path):
    src, url, versions, _ = pushed
    with ckstore.Repo.open(src) as a:
        two_newest = needed(a, versions[-1][0], versions[-2][0])
    with ckstore.clone(url, tmp_path / "two", depth=2) as two:
        assert local_chunks(two) == two_newest
    # the two filters intersect: the selected tensors of the newest N commits
    with ckstore.clone(url, tmp_path / "f", depth=2, filter="tensors=layers.0.*") as f:
        assert f.remote_list()[0].partial == {"tensors": ["layers.0.*"], "depth": 2}
        wanted = {c for rev in ("HEAD", "HEAD~1") for t in f.engine.manifest_of(f.engine.resolve(rev)).tensors
                  if t.name == "layers.0.weight" for c in t.chunks}
        assert local_chunks(f) == wanted  # fresh values each version: no delta bases to bring
        f.checkout(versions[0][0], tmp_path / "out")
        assert same_tree(versions[0][1], tmp_path / "out")


@pytest.mark.parametrize("kwargs, message", [
    ({"depth": 0}, "--depth must be"), ({"depth": -3}, "--depth must be"),
    ({"depth": 1, "metadata_only": True}, "exclude each other")])
def test_bad_depths_are_usage_errors_and_create_nothing(pushed, tmp_path, kwargs, message):
    with pytest.raises(UsageError, match=message):
        ckstore.clone(pushed[1], tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()
    with pytest.raises(UsageError):
        select.parse_filter(None, depth=True)


@pytest.mark.parametrize("partial", [{}, {"depth": 0}, {"depth": True}, {"depth": "1"}, {"depth": 1, "x": 1}])
def test_remotes_json_refuses_a_bad_partial_setting(partial):
    with pytest.raises(UsageError, match="'partial' must be"):
        remotes.check_partial(partial)
    assert remotes.check_partial({"depth": 2, "tensors": ["a*"]}) == {"tensors": ["a*"], "depth": 2}


CLI = [sys.executable, "-c", "import sys; from ckstore.cli import main; sys.argv[0] = 'ckstore'; main()"]


def ck(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CKSTORE_DEBUG", "CKSTORE_DIR")}
    return subprocess.run([*CLI, *map(str, args)], cwd=cwd, env={**env, "CKSTORE_AUTHOR": "t@ci"},
                          capture_output=True, text=True, timeout=120)


def test_cli_clone_depth(pushed, tmp_path):
    _, url, versions, _ = pushed
    done = ck("clone", "--depth", "1", url, "c", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "(depth 1: older commits' data on demand)" in done.stdout + done.stderr
    listed = ck("remote", "list", cwd=tmp_path / "c")
    assert listed.returncode == 0 and "[partial: depth 1]" in listed.stdout, listed
    as_json = json.loads(ck("remote", "list", "--json", cwd=tmp_path / "c").stdout)
    assert as_json["remotes"][0]["partial"] == {"depth": 1}
    both = ck("clone", "--depth", "3", "--filter", "tensors=layers.*", url, "f", cwd=tmp_path)
    assert both.returncode == 0, both.stderr
    assert "[partial: layers.*; depth 3]" in ck("remote", "list", cwd=tmp_path / "f").stdout
    for bad in (["--depth", "0"], ["--depth", "-1"], ["--depth", "1", "--metadata-only"]):
        fail = ck("clone", *bad, url, "x", cwd=tmp_path)
        assert fail.returncode == 2 and "error:" in fail.stderr and not (tmp_path / "x").exists(), (bad, fail)


WORKER = """
import sys
sys.path[:0] = sys.argv[1:3]
import ckstore
from ckstore.sync.pull import clone
from ckstore.transport import open_transport
from remote_helpers import Barrier
t = Barrier(open_transport(sys.argv[3]), sys.argv[4], lambda op, key: op == "get" and key.endswith(".pack"))
clone(sys.argv[3], sys.argv[5], depth=1, transport=t)
"""


def test_killed_depth_clone_resumes_with_the_same_depth_only(pushed, tmp_path):
    _, url, versions, _ = pushed
    dest, barrier = tmp_path / "c", tmp_path / "barrier"
    barrier.mkdir()
    here = Path(__file__).resolve().parent
    env = {**os.environ, "CKSTORE_AUTHOR": "t@ci"}
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(here), str(here.parent), url, str(barrier), str(dest)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(barrier / "ready")           # history and manifests read, the first chunk fetch about to start
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (dest / ".ckstore" / "CLONING").exists()
    with pytest.raises(IncompleteClone):
        ckstore.Repo.open(dest)
    for other in ({}, {"depth": 2}, {"metadata_only": True}):
        with pytest.raises(AlreadyExists, match="incomplete clone"):
            ckstore.clone(url, dest, **other)
    with ckstore.clone(url, dest, depth=1) as c:
        assert not (dest / ".ckstore" / "CLONING").exists()
        assert c.remote_list()[0].partial == {"depth": 1}
        assert c.last_transfer.bytes_received > 0
        c.checkout("HEAD", tmp_path / "out")
        assert same_tree(versions[-1][1], tmp_path / "out") and c.last_transfer.action == "clone"
        assert c.fsck(read_data=True).ok
