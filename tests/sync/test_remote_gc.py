"""Retention and gc on remotes (directory, moto S3, SeaweedFS): dropped records travel with push and fetch,
forget --remote and gc --remote keep what any ref (and the delta bases) need, and a push racing a gc — two real
processes stopped at file barriers at the worst moments — never loses a chunk."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import ckstore
from ckstore.errors import LockTimeout
from ckstore.model.retention import Policy
from ckstore.sync import remote_gc, remote_leases
from ckstore.transport import retry

from remote_helpers import KINDS, Barrier, Series, commit_n, make_remote, new_repo, same_tree, transport, wait_for

WORKER = Path(__file__).with_name("remote_race_worker.py")


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(retry, "BACKOFF", 0.01)
    monkeypatch.setenv("CKSTORE_AUTHOR", "tester@example")


@pytest.fixture(params=KINDS)
def remote(request, tmp_path, monkeypatch):
    return make_remote(request, tmp_path, monkeypatch, request.param)


def _setup(tmp_path, url, opts, n=4, separate_pushes=True):
    repo = new_repo(tmp_path / "a")
    repo.remote_add("origin", url, **opts)
    series = Series(tmp_path / "src")
    versions = []
    for _ in range(n):
        versions += commit_n(repo, series, 1)
        if separate_pushes:
            repo.push()
    if not separate_pushes:
        repo.push()
    return repo, versions


def _clone_checks(tmp_path, url, opts, expect: dict[str, Path], name="clone"):
    clone = ckstore.clone(url, tmp_path / name, **opts)
    try:
        for i, (rev, src) in enumerate(expect.items()):
            out = tmp_path / f"{name}-out{i}"
            clone.checkout(rev, out)
            assert same_tree(src, out), rev
        assert clone.fsck(remote="origin", read_data=True).ok
    finally:
        clone.close()


def test_dropped_records_travel_with_push_and_clone(tmp_path, remote):
    url, opts = remote
    repo = new_repo(tmp_path / "a")
    repo.remote_add("origin", url, **opts)
    v = commit_n(repo, Series(tmp_path / "src"), 4)
    repo.forget(Policy(keep_last=2))
    repo.gc(now=True)
    assert not repo.engine.store.has_object(bytes.fromhex(v[0][0]))  # the dropped commits are gone here
    repo.push()
    clone = ckstore.clone(url, tmp_path / "b", **opts)
    try:
        log = [c.id for c in clone.log()]
        assert log == [v[3][0], v[2][0]]
        assert bytes.fromhex(v[1][0]) in clone.engine.dropped and bytes.fromhex(v[0][0]) in clone.engine.dropped
        clone.checkout(v[2][0], tmp_path / "out")
        assert same_tree(v[2][1], tmp_path / "out")
        assert clone.fsck(remote="origin").ok
    finally:
        clone.close()
    # a later push of more history, and a fetch into the clone, go through the records too
    commit_n(repo, Series(tmp_path / "src2", seed=3), 1)
    repo.push()
    with ckstore.Repo.open(tmp_path / "b") as again:
        assert again.fetch().commits == 1


def test_forget_and_gc_remote_keep_tags_branches_and_bases(tmp_path, remote):
    url, opts = remote
    repo, v = _setup(tmp_path, url, opts, n=5)
    repo.tag("release", v[1][0])
    repo.branch("exp", v[2][0])
    repo.push(all=True, tags=True)
    plan = repo.forget_remote("origin", Policy(keep_last=1), dry_run=True)
    assert {c.id for c in plan.dropped} == {v[0][0], v[3][0]} and plan.bytes_freed >= 0
    done = repo.forget_remote("origin", Policy(keep_last=1))
    assert {c.id for c in done.dropped} == {v[0][0], v[3][0]}
    first = repo.gc_remote("origin")                 # default grace: garbage is only noted
    assert first.packs_swept == 0 and first.young_skipped > 0
    result = remote_gc.gc_remote(repo.engine, "origin", clock=lambda: time.time() + 7200)
    assert result.packs_swept + result.objects_swept > 0 and result.bytes_freed > 0
    # every kept commit still checks out byte-identical from a fresh clone; delta bases were kept
    _clone_checks(tmp_path, url, opts, {v[4][0]: v[4][1], "release": v[1][1], "exp": v[2][1]})
    again = repo.gc_remote("origin", now=True)
    assert again.packs_swept == 0


def test_forget_remote_deletes_dropped_tags(tmp_path, remote):
    url, opts = remote
    repo, v = _setup(tmp_path, url, opts, n=3, separate_pushes=False)
    repo.tag("old", v[0][0])
    repo.push(tags=True)
    result = repo.forget_remote("origin", Policy(keep_last=1, keep_tagged=False))
    assert [r.rsplit("/", 1)[-1] for r in result.refs_deleted] == ["old"]
    assert not transport(url, opts).exists("refs/tags/old")
    repo.gc_remote("origin", now=True)
    _clone_checks(tmp_path, url, opts, {"main": v[2][1]})


def test_gc_now_refused_while_a_push_holds_a_lease(tmp_path):
    url = str(tmp_path / "remote")
    repo, v = _setup(tmp_path, url, {}, n=1)
    from ckstore.sync.session import Session
    session = Session(transport(url, {}), "origin", repo.engine.store.scheme)
    with remote_leases.RemoteLease(session, "push"):
        with pytest.raises(LockTimeout, match="gc --now refused"):
            repo.gc_remote("origin", now=True)
        with pytest.raises(LockTimeout):
            remote_gc.gc_remote(repo.engine, "origin", grace=0, wait=0.2)
    assert repo.gc_remote("origin", now=True).live_commits == 1


def test_stale_leases_of_dead_processes_do_not_block(tmp_path):
    url = str(tmp_path / "remote")
    repo, v = _setup(tmp_path, url, {}, n=1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import json
    body = {"host": remote_leases.HOST, "pid": int(dead.stdout), "time": time.time(), "what": "push", "id": "x"}
    transport(url, {}).put("locks/lease-dead", json.dumps(body).encode())
    transport(url, {}).put("locks/gc", json.dumps(body).encode())
    assert repo.gc_remote("origin", now=True).live_commits == 1
    assert not transport(url, {}).exists("locks/lease-dead") and not transport(url, {}).exists("locks/gc")


def _garbage_round(repo, tmp_path, i: int, branch: str):
    """A version g pushed to main, then an unrelated one h over it; forget --remote keeps main's tip only, so g's
    pack (full frames: nothing else shares them) is garbage on the remote. A local branch recommits g's files:
    its push needs exactly the chunks gc wants to delete. Returns g's files."""
    g = Series(tmp_path / f"g{i}", seed=100 + i).next()
    repo.commit(g, f"g{i}")
    repo.push()
    repo.commit(Series(tmp_path / f"h{i}", seed=200 + i).next(), f"h{i}")
    repo.push()
    repo.forget_remote("origin", Policy(keep_last=1))
    repo.commit(g, f"again g{i}", branch=branch)
    return g


def _spawn(repo, url, opts, branch, barrier, mode="before-ref"):
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, str(WORKER), str(repo.root), url, opts.get("endpoint_url", "-"), branch,
                             str(barrier), mode], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _start_gc(out: dict, engine_of, **kw) -> threading.Thread:
    def run():
        try:
            out["r"] = remote_gc.gc_remote(engine_of(), "origin", grace=0, wait=60, **kw)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            out["error"] = exc
    t = threading.Thread(target=run)
    t.start()
    return t


def test_push_started_before_gc_finishes_without_losing_chunks(tmp_path, remote):
    """The push has decided what the remote already has (g's chunks) and waits before moving its ref; gc must
    wait for its lease, then keep what the pushed ref needs."""
    url, opts = remote
    repo = new_repo(tmp_path / "a")
    repo.remote_add("origin", url, **opts)
    rounds = 3 if url.startswith("s3://") else 5
    expect = {}
    for i in range(rounds):
        branch = f"feature{i}"
        expect[branch] = _garbage_round(repo, tmp_path, i, branch)
        barrier = tmp_path / f"barrier-a{i}"
        barrier.mkdir()
        proc = _spawn(repo, url, opts, branch, barrier)
        wait_for(barrier / "ready")
        out: dict = {}
        gc = _start_gc(out, lambda: repo.engine)
        time.sleep(0.5)
        assert gc.is_alive(), f"gc must wait for the push's lease: {out}"
        (barrier / "go").write_text("go")
        assert proc.wait(60) == 0, proc.stderr.read()
        gc.join(60)
        assert "error" not in out, out
        if i:
            assert out["r"].packs_swept >= 1    # the previous round's h went; g's pack, needed again, stayed
    _clone_checks(tmp_path, url, opts, expect)


def test_push_starting_while_gc_deletes_waits_and_reuploads(tmp_path, remote):
    """gc holds locks/gc and is deleting g's pack; a push of g's files starts: it must wait for gc, then find
    the chunks gone and upload them again."""
    url, opts = remote
    repo = new_repo(tmp_path / "a")
    repo.remote_add("origin", url, **opts)
    rounds = 2 if url.startswith("s3://") else 4
    expect = {}
    for i in range(rounds):
        branch = f"late{i}"
        expect[branch] = _garbage_round(repo, tmp_path, i, branch)
        barrier = tmp_path / f"barrier-b{i}"
        barrier.mkdir()
        gate = Barrier(transport(url, opts), barrier, lambda op, key: op == "delete" and key.startswith("packs/"))
        out: dict = {}
        gc = _start_gc(out, lambda: repo.engine, transport=gate)
        wait_for(barrier / "ready")
        proc = _spawn(repo, url, opts, branch, barrier, mode="none")
        time.sleep(0.8)
        assert proc.poll() is None, "the push must wait while gc holds the remote"
        (barrier / "go").write_text("go")
        gc.join(60)
        assert "error" not in out, out
        assert out["r"].packs_swept > 0
        assert proc.wait(60) == 0, proc.stderr.read()
    _clone_checks(tmp_path, url, opts, expect)


def test_a_push_releases_its_lease_without_deleting_and_gc_clears_it(tmp_path):
    url = str(tmp_path / "remote")
    repo, v = _setup(tmp_path, url, {}, n=1)
    import json
    leases = [k for k in transport(url, {}).list("locks")]
    assert leases and all(json.loads(transport(url, {}).get(k))["released"] for k in leases)
    repo.gc_remote("origin", dry_run=True)
    assert list(transport(url, {}).list("locks")) == leases      # a dry run changes nothing
    repo.gc_remote("origin")
    assert list(transport(url, {}).list("locks")) == []
