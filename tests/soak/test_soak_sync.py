"""Soak tier of the remote cases of RELIABILITY.md: T1 (crash sweep and SIGKILL of push and pull, directory and S3),
T5 (racing pushes, directory and S3), T6 (interrupted transfers resumed), T11 (bad remotes). Remotes are real: a
directory, and SeaweedFS `weed mini` for S3 (moto lets two conditional writers both win: not used for races)."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

import pytest

from soakutil import Tally, n, skip_unless_soak, soak

import ckstore
from ckstore.fs import locks
from ckstore.errors import CkstoreError, IntegrityError, NonFastForward, RemoteError, RemoteRefMoved
from ckstore.results import SyncResult
from ckstore.sync import chunks as chunks_mod, fetch as fetch_mod, push as push_mod, session
from ckstore.transport import forget_memory_transport, open_transport

import test_reliability as rel
from crash_worker import make_checkpoint, tree_bytes
from faults import Faulty
from s3servers import BUCKET, WEED_KEY, WEED_SECRET, s3_env
import test_stalls as st
import test_sync as ts
from test_sync import quick_retries  # noqa: F401  (autouse)

pytestmark = [soak, skip_unless_soak]
WORKER = Path(__file__).with_name("sync_worker.py")
LEFT_LOCKS: list[str] = []  # stale lock files left behind by killed operations (broken by the next user)


# -- T1: push and pull killed ------------------------------------------------------------------------------------------

def set_url(repo_root: Path, url: str, **opts) -> None:
    path = repo_root / ".ckstore" / "remotes.json"
    raw = json.loads(path.read_text())
    raw["origin"].update(url=url, **opts)
    path.write_text(json.dumps(raw))


@pytest.fixture(scope="module")
def sync_base(tmp_path_factory) -> dict:
    """tpl/a: main at b1 (pushed to tpl/remote), branch next at new (b1's child); tpl/b: a clone at b1 while the
    remote is later at new (tpl/remote-new)."""
    d = tmp_path_factory.mktemp("syncbase")
    srcs = {m: make_checkpoint(d / "src" / m, 50 + i, shared_seed=77) for i, m in enumerate(["b0", "b1", "new"])}
    tpl = d / "tpl"
    with ckstore.Repo.init(tpl / "a", chunk_size=rel.CHUNK) as a:
        for m in ("b0", "b1"):
            rel.commit(a, srcs[m], m)
        a.remote_add("origin", str(tpl / "remote"))
        a.push("origin", ["main"])
        a.branch("next")
        rel.commit(a, srcs["new"], "new", branch="next")
        ids = {c.message: c.id for c in a.log("next")}
    ckstore.clone(str(tpl / "remote"), tpl / "b").close()
    shutil.copytree(tpl / "remote", tpl / "remote-new")
    with ckstore.Repo.open(tpl / "a") as a:
        set_url(tpl / "a", str(tpl / "remote-new"))
        a.reset("main", "next", "fast-forward")
        a.push("origin", ["main"])
        a.reset("main", ids["b1"], "back", force=True)
        set_url(tpl / "a", str(tpl / "remote"))
    return {"tpl": tpl, "srcs": srcs, "ids": ids}


def op_seconds(base: dict, op: str, work: Path, **env) -> tuple[float, int]:
    case = prepare(base, op, work / f"timing-{op}", **env)
    p = subprocess.run([sys.executable, str(WORKER), op, str(case["repo"])], env=rel.worker_env(), cwd=rel.PROJECT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    _, seconds, before, after = p.stdout.split("\n")[1].split()
    return float(seconds), int(after) - int(before)


def prepare(base: dict, op: str, case: Path, s3: str | None = None, endpoint: str | None = None) -> dict:
    tpl = base["tpl"]
    if op == "push":
        shutil.copytree(tpl / "a", case / "a")
        if s3:
            set_url(case / "a", s3, endpoint_url=endpoint)
            with ckstore.Repo.open(case / "a") as a:
                a.push("origin", ["main"])
        else:
            shutil.copytree(tpl / "remote", case / "remote")
            set_url(case / "a", str(case / "remote"))
        with ckstore.Repo.open(case / "a") as a:
            a.reset("main", "next", "fast-forward")
        return {"repo": case / "a", "url": s3 or str(case / "remote"), "opts": {"endpoint_url": endpoint} if s3 else {}}
    shutil.copytree(tpl / "b", case / "b")
    shutil.copytree(tpl / "remote-new", case / "remote")
    set_url(case / "b", str(case / "remote"))
    return {"repo": case / "b", "url": str(case / "remote"), "opts": {}}


def check_after(base: dict, op: str, c: dict, work: Path) -> int:
    """fsck clean (local and remote), the killed operation all or nothing, checkouts byte-identical, and the
    operation redone without manual unlocking. Returns the number of commits the operation's target ended with."""
    srcs, ids = base["srcs"], base["ids"]
    with ckstore.Repo.open(c["repo"]) as r:
        report = r.fsck(read_data=True)
        assert report.ok, [str(p) for p in report.problems]
        assert r.fsck(remote="origin", read_data=True).ok
        if op == "pull":
            history = [e.message for e in r.log("main")]
            assert history in (["b1", "b0"], ["new", "b1", "b0"]), history
    if op == "push":
        with ckstore.clone(c["url"], work / "seen", **c["opts"]) as seen:
            history = [e.message for e in seen.log("main")]
            assert history in (["b1", "b0"], ["new", "b1", "b0"]), history
            for m in history:
                rel.assert_checkout_identical(seen, ids[m], srcs[m], work / f"co-{m}")
        shutil.rmtree(work / "seen")
    with ckstore.Repo.open(c["repo"]) as r:  # redone with no manual unlocking
        r.push("origin", ["main"]) if op == "push" else r.pull("origin", "main")
        assert r.fsck(read_data=True).ok and r.fsck(remote="origin", read_data=True).ok
        assert r.resolve("main") == ids["new"]
        for m in ("b0", "b1", "new"):
            rel.assert_checkout_identical(r, ids[m], srcs[m], work / f"after-{m}")
    # a lock left by the killed process must be one the stale rule breaks (its owner is dead, or it never got one)
    for lock in rel.lock_files(c["repo"]):
        path = c["repo"] / lock
        assert locks.is_stale(path, None) in (True, None) or locks.lock_owner(path) == "owner unknown", \
            f"{lock} is held by a live owner: {locks.lock_owner(path)}"
        LEFT_LOCKS.append(lock)
    return len(history)


def crash_case(base: dict, op: str, step: int, steps: int, work: Path) -> int | None:
    c = prepare(base, op, work)
    p = subprocess.run([sys.executable, str(WORKER), op, str(c["repo"])], cwd=rel.PROJECT, capture_output=True,
                       text=True, timeout=300, env=rel.worker_env(CKSTORE_CRASH_AT=str(step)))
    if step > steps:
        assert p.returncode == 0, p.stderr[-2000:]
        shutil.rmtree(work)
        return None
    assert p.returncode == 137, f"rc {p.returncode}\n{p.stderr[-2000:]}"
    got = check_after(base, op, c, work)
    shutil.rmtree(work)
    return got


@pytest.mark.parametrize("op", ["push", "pull"])
def test_t1_crash_sweep_directory_remote(sync_base, tmp_path: Path, record_property, op: str) -> None:
    _, steps = op_seconds(sync_base, op, tmp_path)
    assert steps >= 3, f"a {op} should take several durable I/O steps, counted {steps}"
    tally, seen = Tally(record_property, "every crash point"), []
    for step in range(1, steps + 2):
        seen.append(tally.case(f"{op} CKSTORE_CRASH_AT={step}", crash_case, sync_base, op, step, steps,
                               tmp_path / f"n{step}"))
    tally.notes["io_steps"] = steps
    tally.notes["stale_locks_left"] = len(LEFT_LOCKS)
    LEFT_LOCKS.clear()
    tally.finish()


def kill_case(base: dict, op: str, seconds: float, rng: random.Random, work: Path, **env) -> int:
    c = prepare(base, op, work, **env)
    proc = subprocess.Popen([sys.executable, str(WORKER), op, str(c["repo"])], env=rel.worker_env(), cwd=rel.PROJECT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        threading.Event().wait(rng.uniform(0, seconds * 1.3))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    got = check_after(base, op, c, work)
    shutil.rmtree(work)
    return got


@pytest.mark.parametrize("target", ["push-directory", "pull-directory", "push-s3"])
def test_t1_sigkill_push_pull(sync_base, tmp_path: Path, record_property, monkeypatch, request, target) -> None:
    op, kind = target.split("-")
    env = {}
    if kind == "s3":
        s3_env(monkeypatch, tmp_path, key=WEED_KEY, secret=WEED_SECRET)
        env = {"s3": None, "endpoint": request.getfixturevalue("weed_endpoint")}
    count = n(200)
    tally, rng, seen = Tally(record_property, 200), random.Random(4242), []

    def new_env() -> dict:
        return dict(env, s3=f"s3://{BUCKET}/k-{uuid.uuid4().hex[:12]}") if env else {}
    seconds, _ = op_seconds(sync_base, op, tmp_path, **new_env())
    for i in range(count):
        seen.append(tally.case(f"{target} kill {i} (Random(4242))", kill_case, sync_base, op, seconds, rng,
                               tmp_path / f"k{i}", **new_env()))
    tally.notes["ended_before"] = seen.count(2)
    tally.notes["ended_after"] = seen.count(3)
    tally.notes["op_seconds"] = round(seconds, 3)
    tally.notes["stale_locks_left"] = len(LEFT_LOCKS)
    LEFT_LOCKS.clear()
    tally.finish()


# -- T5: racing pushes -------------------------------------------------------------------------------------------------

def race_round(tmp: Path, url: str, opts: dict, seed: int) -> None:
    """test_sync.test_racing_pushes_have_one_winner, once, on a fresh remote."""
    with ts.new_repo(tmp / "a") as a:
        ts.commit_series(a, ts.Series(tmp / "ckpts", seed), 1)
        a.remote_add("origin", url, **opts)
        a.push()
    b, c = ckstore.clone(url, tmp / "b", **opts), ckstore.clone(url, tmp / "c", **opts)
    try:
        tips = {}
        for name, r, s in (("b", b, 2 * seed + 1), ("c", c, 2 * seed + 2)):
            tips[name] = ts.commit_series(r, ts.Series(tmp / f"ck-{name}", s), 1)[0][0]
        barrier = threading.Barrier(2, timeout=30)
        outcome: dict[str, object] = {}

        def push(name, r):
            t = Faulty(ts.transport_for(url, opts), before_ref_put=barrier.wait)
            try:
                outcome[name] = push_mod.push(r.engine, transport=t)
            except CkstoreError as exc:
                outcome[name] = exc
                barrier.abort()

        threads = [threading.Thread(target=push, args=(nm, r)) for nm, r in (("b", b), ("c", c))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        winners = [nm for nm, o in outcome.items() if isinstance(o, SyncResult)]
        losers = [o for o in outcome.values() if isinstance(o, CkstoreError)]
        assert len(winners) == 1 and len(losers) == 1, outcome
        assert isinstance(losers[0], (RemoteRefMoved, NonFastForward)), losers
        assert "moved during the push" in str(losers[0]) or "non-fast-forward" in str(losers[0])
        with ckstore.clone(url, tmp / "fresh", **opts) as fresh:
            assert fresh.fsck(read_data=True).ok
            assert fresh.resolve("main") == tips[winners[0]]
        with pytest.raises(NonFastForward):
            (c if winners[0] == "b" else b).push()
    finally:
        b.close()
        c.close()
    shutil.rmtree(tmp)


@pytest.mark.parametrize("kind", ["directory", "s3-seaweedfs"])
def test_t5_racing_pushes(tmp_path: Path, record_property, monkeypatch, request, kind: str) -> None:
    opts = {}
    if kind != "directory":
        s3_env(monkeypatch, tmp_path, key=WEED_KEY, secret=WEED_SECRET)
        opts = {"endpoint_url": request.getfixturevalue("weed_endpoint")}
    tally = Tally(record_property, 50)
    for i in range(n(50)):
        url = str(tmp_path / f"remote{i}") if kind == "directory" else f"s3://{BUCKET}/race-{uuid.uuid4().hex[:12]}"
        tally.case(f"{kind} round {i}", race_round, tmp_path / f"r{i}", url, opts, i)
    tally.finish()


# -- T6: interrupted transfers ---------------------------------------------------------------------------------------

def interrupted_push(tmp: Path, seed: int) -> None:
    rng = random.Random(seed)
    url, ref_url = str(tmp / "remote"), f"memory://ref-{uuid.uuid4().hex}"
    with ts.new_repo(tmp / "a") as a:
        ts.commit_series(a, ts.Series(tmp / "ck", seed), 3)
        a.remote_add("origin", url)
        a.remote_add("reference", ref_url)
        full = a.push("reference").bytes_sent
        faulty = Faulty(ts.transport_for(url, {}, create=True), fail_put_after=rng.randrange(1, 12))
        try:
            push_mod.push(a.engine, "origin", transport=faulty)
            cut = False
        except RemoteError as exc:
            assert "injected" in str(exc), exc
            cut = True
        if cut:
            keys = list(faulty.inner.list(""))
            # a cut push leaves hash-named packs and its own writer lease (released or stale), nothing else
            assert all(k == "config" or k.startswith(("packs/", "locks/lease-")) for k in keys), keys
            assert a.engine.refs.read("refs/remotes/origin/main") is None
            resumed = a.push("origin")
            in_flight = push_mod.PACKS_IN_FLIGHT * (session.PACK_LIMIT + 2 * ts.CHUNK)
            assert resumed.bytes_sent <= full - faulty.landed + in_flight, (resumed.bytes_sent, full, faulty.landed)
    with ckstore.clone(url, tmp / "fresh") as fresh:
        assert fresh.fsck(read_data=True).ok and len(fresh.log()) == 3
    forget_memory_transport(ref_url.removeprefix("memory://"))
    shutil.rmtree(tmp)


def interrupted_fetch(tmp: Path, seed: int) -> None:
    rng = random.Random(seed)
    url = str(tmp / "remote")
    with ts.new_repo(tmp / "a") as a:
        versions = ts.commit_series(a, ts.Series(tmp / "ck", seed), 3)
        a.remote_add("origin", url)
        a.push()
    with ts.new_repo(tmp / "b") as b:
        b.remote_add("origin", url)
        try:
            fetch_mod.fetch(b.engine, transport=Faulty(open_transport(url), fail_get_after=rng.randrange(0, 16)))
        except RemoteError as exc:
            assert "injected" in str(exc), exc
            assert b.engine.refs.list() == {} and b.fsck(read_data=True).ok
        b.fetch()
        b.pull()
        for i, (oid, src) in enumerate(versions):
            b.checkout(oid, tmp / f"out{i}")
            assert ts.same_tree(src, tmp / f"out{i}")
        assert b.fsck(read_data=True).ok
    shutil.rmtree(tmp)


@pytest.mark.parametrize("direction", ["push", "fetch"])
def test_t6_interrupted_transfer(tmp_path: Path, record_property, monkeypatch, direction: str) -> None:
    monkeypatch.setattr(session, "PACK_LIMIT", 96 * 1024)
    monkeypatch.setattr(chunks_mod, "MAX_RUN", 64 * 1024)
    tally = Tally(record_property, 100)
    fn = interrupted_push if direction == "push" else interrupted_fetch
    for seed in range(n(100)):
        tally.case(f"{direction} seed {seed}", fn, tmp_path / f"s{seed}", seed)
    tally.notes["cut"] = "after a random number of requests (Faulty), not at a byte"
    tally.finish()


# -- T11: bad remotes -------------------------------------------------------------------------------------------------

def _packs(remote: Path) -> list[Path]:
    return sorted((remote / "packs").rglob("*.pack"))


def _objects(remote: Path) -> list[Path]:
    return sorted(p for p in (remote / "objects").rglob("*") if p.is_file())


def damage_remote(fault: str, rng: random.Random, remote: Path, new_packs: list[Path]) -> None:
    if fault == "flip":
        p = rng.choice(new_packs)
        data = bytearray(p.read_bytes())
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        p.write_bytes(bytes(data))
    elif fault == "truncate":
        p = rng.choice(new_packs)
        os_size = p.stat().st_size
        p.write_bytes(p.read_bytes()[:rng.randrange(os_size)])
    elif fault == "other-chunk":  # two packs' bytes served under each other's names
        a, b = rng.sample(_packs(remote), 2) if len(_packs(remote)) > 1 else (new_packs[0], new_packs[0])
        da, db = a.read_bytes(), b.read_bytes()
        a.write_bytes(db)
        b.write_bytes(da)
    elif fault == "object-flip":
        o = rng.choice(_objects(remote))
        data = bytearray(o.read_bytes())
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        o.write_bytes(bytes(data))
    else:
        raise AssertionError(fault)


def stall_s3_case(tmp: Path, seed: int, opts: dict) -> None:
    """A pushes to a SeaweedFS bucket, B fetches through a transport whose every k-th request stalls."""
    rng = random.Random(seed)
    url = f"s3://{BUCKET}/stall-{uuid.uuid4().hex[:12]}"
    with ts.new_repo(tmp / "a") as a:
        ts.commit_series(a, ts.Series(tmp / "ck", seed), 2)
        a.remote_add("origin", url, **opts)
        a.push()
        with ts.new_repo(tmp / "b") as b:
            b.remote_add("origin", url, **opts)
            faulty, retrying = st.stalled(ts.transport_for(url, opts), stall_every=rng.randrange(3, 7))
            try:
                t0 = time.monotonic()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", st.RemoteTimedOut)
                    fetch_mod.fetch(b.engine, transport=retrying)
                assert time.monotonic() - t0 < st.STALL / 4 and faulty.stalled >= 1 and retrying.timeouts >= 1
            finally:
                faulty.release()
            b.pull()
            assert b.resolve("main") == a.resolve("main") and b.fsck(read_data=True).ok
            for c in b.log("main"):
                b.checkout(c.id, tmp / f"b-{c.id[:8]}")
                a.checkout(c.id, tmp / f"a-{c.id[:8]}")
                assert tree_bytes(tmp / f"b-{c.id[:8]}") == tree_bytes(tmp / f"a-{c.id[:8]}")
    shutil.rmtree(tmp)


def bad_remote_case(tmp: Path, fault: str, seed: int) -> None:
    rng = random.Random(seed)
    if fault == "stall":  # every k-th request hangs 400x longer than the per-request timeout
        st.stalled_fetch(tmp, rng.randrange(3, 7))
        shutil.rmtree(tmp)
        return
    a, b, url, new_packs = ts._pushed_pair(tmp)
    try:
        remote = tmp / "remote"
        if fault == "stale-ref":
            tip = b.resolve("main")
            stale = [c.id for c in a.log()][-1]
            (remote / "refs" / "heads" / "main").write_text(stale + "\n")
            b.pull()  # an older tip is not a reason to move main back
            assert b.resolve("main") == tip
            assert b.fsck(read_data=True).ok
            return
        if fault == "transient":
            flaky = Faulty(open_transport(url), flaky_every=rng.randrange(2, 6))
            fetch_mod.fetch(b.engine, transport=flaky)
            assert flaky.failed >= 1
            b.pull()
            assert b.resolve("main") == a.resolve("main") and b.fsck(read_data=True).ok
            return
        damage_remote(fault, rng, remote, new_packs)
        before = ts.snapshot(b)
        try:
            b.pull()
        except IntegrityError:
            assert ts.snapshot(b) == before, "a refused fetch changed the local repository"
        report = b.fsck(read_data=True)
        assert report.ok, [str(p) for p in report.problems]
        for c in b.log("main"):  # whatever was taken in checks out identical to what A committed
            b.checkout(c.id, tmp / f"b-{c.id[:8]}")
            a.checkout(c.id, tmp / f"a-{c.id[:8]}")
            assert tree_bytes(tmp / f"b-{c.id[:8]}") == tree_bytes(tmp / f"a-{c.id[:8]}")
    finally:
        a.close()
        b.close()
    shutil.rmtree(tmp)


@pytest.mark.parametrize("fault", ["flip", "truncate", "other-chunk", "object-flip", "stale-ref", "transient",
                                   "stall", "stall-s3"])
def test_t11_bad_remote(tmp_path: Path, record_property, monkeypatch, request, fault: str) -> None:
    tally = Tally(record_property, 20)
    if fault == "stall-s3":
        s3_env(monkeypatch, tmp_path, key=WEED_KEY, secret=WEED_SECRET)
        opts = {"endpoint_url": request.getfixturevalue("weed_endpoint")}
    for seed in range(n(20)):
        if fault == "stall-s3":
            tally.case(f"{fault} seed {seed}", stall_s3_case, tmp_path / f"s{seed}", seed, opts)
        else:
            tally.case(f"{fault} seed {seed}", bad_remote_case, tmp_path / f"s{seed}", fault, seed)
    if fault.startswith("stall"):
        tally.notes["stall"] = f"every 3rd-6th request hangs {st.STALL:g} s; per-request timeout {st.TIMEOUT:g} s"
    tally.finish()
