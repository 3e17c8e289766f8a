"""Push, fetch, pull and clone between real repositories through every kind of remote.

Remotes are real: directories under tmp_path, process-global `memory://` stores, a moto S3 server on loopback
(only the AWS environment is faked) and, when SeaweedFS's `weed` is on PATH, `weed mini` (marked `integration`).
Failures are injected by wrapping a real transport (`Faulty`), never by mocking the code under test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import ckstore
from ckstore.model import codec
from ckstore.errors import (AlreadyExists, CkstoreError, CorruptObject, IntegrityError, MissingObject, RemoteError,
                            RemoteUnavailable, UnsupportedFormat, UsageError)
from ckstore.transport import Transport, forget_memory_transport, open_transport, retry
from ckstore.sync import chunks as chunks_mod, fetch as fetch_mod, push as push_mod, select, session
from ckstore.errors import NonFastForward, RemoteRefMoved
from ckstore.results import SyncResult
from ckstore.storage.packs import pack_path, parse_idx

from conftest import make_safetensors
from faults import Faulty

from s3servers import BUCKET, WEED_KEY, WEED_SECRET, free_port, s3_env  # noqa: E402

CHUNK = 1 << 16


KINDS = ["memory", "directory", "s3-moto", pytest.param("s3-seaweedfs", marks=pytest.mark.integration)]


@pytest.fixture(params=KINDS)
def remote(request, tmp_path, monkeypatch):
    """(kind, url, options for remote add / clone) of a new, empty remote."""
    kind = request.param
    if kind == "memory":
        name = f"sync-{uuid.uuid4().hex}"
        yield kind, f"memory://{name}", {}
        forget_memory_transport(name)
        return
    if kind == "directory":
        yield kind, str(tmp_path / "remote"), {}
        return
    if kind == "s3-moto":
        s3_env(monkeypatch, tmp_path)
        endpoint = request.getfixturevalue("moto_endpoint")
    else:
        s3_env(monkeypatch, tmp_path, key=WEED_KEY, secret=WEED_SECRET)
        endpoint = request.getfixturevalue("weed_endpoint")
    yield kind, f"s3://{BUCKET}/r-{uuid.uuid4().hex[:12]}", {"endpoint_url": endpoint}


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(retry, "BACKOFF", 0.01)
    monkeypatch.setenv("CKSTORE_AUTHOR", "tester@example")


# ------------------------------------------------------------------------------------------- checkpoints
class Series:
    """A training run's checkpoints: F32 and BF16 tensors drifting a little each version (so deltas pay)."""

    def __init__(self, root: Path, seed: int = 0) -> None:
        self.root, self.rng = root, np.random.default_rng(seed)
        self.state = {"enc.weight": self.rng.standard_normal((128, 512)).astype(np.float32),
                      "dec.weight": self.rng.standard_normal((256, 256)).astype(ml_dtypes.bfloat16),
                      "head.bias": self.rng.standard_normal(1000).astype(np.float32)}
        self.n = 0

    def next(self) -> Path:
        """The next version as a directory (model.safetensors + a small config.json)."""
        if self.n:
            for k, v in self.state.items():
                step = (self.rng.standard_normal(v.shape) * 1e-3).astype(np.float32)
                self.state[k] = (v.astype(np.float32) + step).astype(v.dtype)
        d = self.root / f"v{self.n}"
        make_safetensors(d / "model.safetensors", self.state, metadata={"version": str(self.n)})
        (d / "config.json").write_text(json.dumps({"version": self.n, "hidden": 512}))
        self.n += 1
        return d


def commit_series(repo, series: Series, n: int, branch: str | None = None) -> list[tuple[str, Path]]:
    out = []
    for _ in range(n):
        d = series.next()
        info = repo.commit(d, f"version {series.n - 1}", metrics={"loss": 1.0 / series.n}, step=series.n,
                           branch=branch)
        out.append((info.id, d))
    return out


def same_tree(a: Path, b: Path) -> bool:
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return fa == fb and all((a / p).read_bytes() == (b / p).read_bytes() for p in fa)


def delta_frames(repo) -> int:
    n = 0
    for pack_id in repo.engine.store.pack_ids():
        _, entries = parse_idx(pack_path(repo.engine.store.packs_dir, pack_id, ".idx").read_bytes())
        data = pack_path(repo.engine.store.packs_dir, pack_id).read_bytes()
        n += sum(codec.frame_base(data[e.offset:e.offset + e.length]) is not None for e in entries)
    return n


def snapshot(repo) -> dict:
    """What a failed operation must leave unchanged."""
    return {"refs": repo.engine.refs.list(), "objects": sorted(repo.engine.store.object_ids()),
            "packs": sorted(repo.engine.store.pack_ids()), "chunks": repo.engine.store.index.count()}


def new_repo(path: Path):
    return ckstore.Repo.init(path, chunk_size=CHUNK)


def transport_for(url: str, opts: dict, create: bool = False) -> Transport:
    if url.startswith("s3://"):
        return open_transport(url, **opts)
    if url.startswith("memory://"):
        return open_transport(url)
    return open_transport(url, create=create)


# ------------------------------------------------------------------------------------------- round trips
def test_exchange_series_through_every_remote(tmp_path, remote):
    kind, url, opts = remote
    series = Series(tmp_path / "ckpts")
    with new_repo(tmp_path / "a") as a:
        versions = commit_series(a, series, 3)
        a.remote_add("origin", url, **opts)
        first = a.push()
        assert first.refs_updated and first.commits == 3 and first.packs >= 1
        assert a.engine.refs.read("refs/remotes/origin/main").hex() == versions[-1][0]
        assert first.bytes_sent < 1.2 * sum(a.show(v).new_bytes for v, _ in versions) + 256 * 1024
        assert any(e["action"] == "push" for e in a.audit())

        b = ckstore.clone(url, tmp_path / "b", **opts)
        with b:
            assert b.last_transfer.commits == 3 and b.last_transfer.bytes_received > 0
            assert [e.id for e in b.log()] == [v for v, _ in reversed(versions)]
            assert b.head_branch() == "main" and b.config.chunk_size == CHUNK
            assert delta_frames(b) > 0, "the series should be stored with delta frames"
            for i, (oid, src) in enumerate(versions):
                b.checkout(oid, tmp_path / f"out-b{i}")
                assert same_tree(src, tmp_path / f"out-b{i}")
            assert b.fsck(read_data=True).ok

            # B trains on and pushes one more version: the push carries only what that version added
            (oid4, src4), = commit_series(b, series, 1)
            new_bytes = b.show(oid4).new_bytes
            inc = b.push()
            assert inc.commits == 1 and inc.chunks > 0
            assert inc.bytes_transferred < 1.2 * new_bytes + 64 * 1024, (inc.to_dict(), new_bytes)
            print(f"\n[{kind}] incremental push: {inc.bytes_transferred} bytes moved "
                  f"({inc.bytes_sent} sent) for a version storing {new_bytes} new bytes")

        pulled = a.pull()
        assert pulled.commits == 1 and a.resolve("main") == oid4
        a.checkout("main", tmp_path / "out-a4")
        assert same_tree(src4, tmp_path / "out-a4")
        again = a.fetch()
        assert again.commits == 0 and again.chunks == 0 and not again.refs_updated


def test_state_dict_round_trip_and_tags(tmp_path):
    url = f"memory://sd-{uuid.uuid4().hex}"
    rng = np.random.default_rng(3)
    sd = {"model": {"w": rng.standard_normal((64, 256)).astype(ml_dtypes.bfloat16),
                    "b": rng.standard_normal(256).astype(np.float32)}, "step": 7, "names": ["x", "y"]}
    try:
        with new_repo(tmp_path / "a") as a:
            a.commit(sd, "state dict")
            a.tag("v1", message="first release")
            a.remote_add("origin", url)
            res = a.push(tags=True, branches=["main"])
            assert {r["ref"] for r in res.refs_updated} == {"refs/heads/main", "refs/tags/v1"}
        with ckstore.clone(url, tmp_path / "b") as b:
            got = b.load()
            assert got["step"] == 7 and got["names"] == ["x", "y"]
            assert got["model"]["w"].dtype == sd["model"]["w"].dtype
            assert np.array_equal(got["model"]["w"].view(np.uint16), sd["model"]["w"].view(np.uint16))
            assert [t.name for t in b.tags()] == ["v1"] and b.tags()[0].message == "first release"
            assert b.fsck(read_data=True).ok
    finally:
        forget_memory_transport(url.removeprefix("memory://"))


# ------------------------------------------------------------------------------------------- races
def test_racing_pushes_have_one_winner(tmp_path, remote):
    kind, url, opts = remote
    series = Series(tmp_path / "ckpts")
    with new_repo(tmp_path / "a") as a:
        commit_series(a, series, 1)
        a.remote_add("origin", url, **opts)
        a.push()
    b, c = ckstore.clone(url, tmp_path / "b", **opts), ckstore.clone(url, tmp_path / "c", **opts)
    tips = {}
    for name, r, seed in (("b", b, 1), ("c", c, 2)):
        tips[name] = commit_series(r, Series(tmp_path / f"ck-{name}", seed), 1)[0][0]
    barrier = threading.Barrier(2, timeout=30)
    outcome: dict[str, object] = {}

    def push(name, r):
        # both have read the remote ref and uploaded their data before either tries the compare-and-swap
        t = Faulty(transport_for(url, opts), before_ref_put=barrier.wait)
        try:
            outcome[name] = push_mod.push(r.engine, transport=t)
        except CkstoreError as exc:
            outcome[name] = exc
            barrier.abort()

    threads = [threading.Thread(target=push, args=(n, r)) for n, r in (("b", b), ("c", c))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [n for n, o in outcome.items() if isinstance(o, SyncResult)]
    losers = [o for o in outcome.values() if isinstance(o, CkstoreError)]
    with ckstore.clone(url, tmp_path / "fresh", **opts) as fresh:
        assert fresh.fsck(read_data=True).ok
        remote_tip = fresh.resolve("main")
    if kind == "s3-moto" and len(winners) == 2:
        pytest.xfail("moto checks If-Match, then stores, without a lock: two racing writers can both win")
    assert len(winners) == 1 and len(losers) == 1, outcome
    assert isinstance(losers[0], (RemoteRefMoved, NonFastForward))
    assert "moved during the push" in str(losers[0]) or "non-fast-forward" in str(losers[0])
    assert remote_tip == tips[winners[0]]
    loser = c if winners[0] == "b" else b
    with pytest.raises(NonFastForward):
        loser.push()
    b.close()
    c.close()


# ------------------------------------------------------------------------------------------- damaged remotes
def _pushed_pair(tmp_path: Path, n_first: int = 2, n_more: int = 1):
    """A directory remote; B cloned after `n_first` versions, then A pushed `n_more` more."""
    url = str(tmp_path / "remote")
    series = Series(tmp_path / "ckpts")
    a = new_repo(tmp_path / "a")
    commit_series(a, series, n_first)
    a.remote_add("origin", url)
    a.push()
    b = ckstore.clone(url, tmp_path / "b")
    known = set((tmp_path / "remote" / "packs").rglob("*.pack"))
    commit_series(a, series, n_more)
    a.push()
    new_packs = [p for p in (tmp_path / "remote" / "packs").rglob("*.pack") if p not in known]
    return a, b, url, new_packs


def test_corrupt_remote_pack_is_refused(tmp_path):
    a, b, url, new_packs = _pushed_pair(tmp_path)
    pack = max(new_packs, key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[len(data) // 3] ^= 0x40                       # inside a frame
    pack.write_bytes(bytes(data))
    before = snapshot(b)
    with pytest.raises(IntegrityError) as info:
        b.fetch()
    assert isinstance(info.value, CorruptObject)
    assert snapshot(b) == before
    assert b.fsck(read_data=True).ok
    assert not [p for p in (b.dir / "tmp").iterdir() if p.suffix == ".pack"]
    with pytest.raises(CorruptObject):               # a clone of it fails, and leaves nothing behind
        ckstore.clone(url, tmp_path / "c")
    assert not (tmp_path / "c").exists()
    a.close()
    b.close()


def test_truncated_remote_pack_is_refused(tmp_path):
    a, b, url, new_packs = _pushed_pair(tmp_path)
    pack = max(new_packs, key=lambda p: p.stat().st_size)
    data = pack.read_bytes()
    pack.write_bytes(data[: len(data) // 2])
    before = snapshot(b)
    with pytest.raises(IntegrityError, match="truncated"):
        b.fetch()
    assert snapshot(b) == before and b.fsck(read_data=True).ok
    a.close()
    b.close()


def test_missing_stale_and_bad_refs(tmp_path):
    a, b, url, _ = _pushed_pair(tmp_path)
    root = tmp_path / "remote"
    # a remote ref naming a commit the remote does not have
    (root / "refs" / "heads" / "ghost").write_text("ab" * 32 + "\n")
    before = snapshot(b)
    with pytest.raises(MissingObject) as info:
        b.fetch()
    assert "ab" * 32 in str(info.value) and info.value.hint
    assert snapshot(b) == before
    # damaged or hostile refs are ignored with a warning, never followed
    (root / "refs" / "heads" / "ghost").write_text("not an id\n")
    (root / "refs" / "heads" / "bad..name").write_text(a.resolve("main") + "\n")
    res = b.fetch()
    assert any("bad..name" in w for w in res.warnings) and any("ghost" in w for w in res.warnings)
    assert b.engine.refs.read("refs/remotes/origin/main").hex() == a.resolve("main")
    assert b.engine.refs.read("refs/remotes/origin/ghost") is None
    # a stale clone's own commit is refused as a non-fast-forward; after a pull --force it pushes cleanly
    (root / "refs" / "heads" / "ghost").unlink()
    (root / "refs" / "heads" / "bad..name").unlink()
    commit_series(b, Series(tmp_path / "ck-b", 9), 1, branch="main")   # b's main had not pulled a's commit
    with pytest.raises(NonFastForward, match="non-fast-forward"):
        b.push()
    a.close()
    b.close()


def test_remote_of_another_format_is_refused(tmp_path):
    root = tmp_path / "remote"
    (root).mkdir()
    (root / "config").write_text(json.dumps({"format": "ckstore", "version": 2, "hash": "blake3-256"}))
    with new_repo(tmp_path / "a") as a:
        commit_series(a, Series(tmp_path / "ck"), 1)
        a.remote_add("origin", str(root))
        with pytest.raises(UnsupportedFormat, match="version 2"):
            a.push()
        with pytest.raises(UnsupportedFormat):
            a.fetch()
    (tmp_path / "empty").mkdir()
    with pytest.raises(RemoteError, match="not a ckstore remote"):
        ckstore.clone(str(tmp_path / "empty"), tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------- interruptions
@pytest.mark.parametrize("kind", ["memory", "directory"])
def test_interrupted_push_resumes(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(session, "PACK_LIMIT", 128 * 1024)
    url = f"memory://ip-{uuid.uuid4().hex}" if kind == "memory" else str(tmp_path / "remote")
    ref_url = f"memory://ref-{uuid.uuid4().hex}"
    with new_repo(tmp_path / "a") as a:
        commit_series(a, Series(tmp_path / "ck"), 3)
        a.remote_add("origin", url)
        a.remote_add("reference", ref_url)
        full = a.push("reference").bytes_sent             # what an uninterrupted push sends
        faulty = Faulty(transport_for(url, {}, create=True), fail_put_after=4)
        with pytest.raises(RemoteError, match="injected"):
            push_mod.push(a.engine, "origin", transport=faulty)
        inner = faulty.inner
        keys = list(inner.list(""))
        assert keys and all(k == "config" or k.startswith(("packs/", "locks/lease-")) for k in keys), keys  # garbage
        assert a.engine.refs.read("refs/remotes/origin/main") is None
        resumed = a.push("origin")
        in_flight = push_mod.PACKS_IN_FLIGHT * (session.PACK_LIMIT + 2 * CHUNK)
        assert resumed.bytes_sent <= full - faulty.landed + in_flight, (resumed.bytes_sent, full, faulty.landed)
        assert resumed.bytes_sent < full
    with ckstore.clone(url, tmp_path / "fresh") as fresh:
        assert fresh.fsck(read_data=True).ok and len(fresh.log()) == 3
    forget_memory_transport(url.removeprefix("memory://"))
    forget_memory_transport(ref_url.removeprefix("memory://"))


def test_interrupted_fetch_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(session, "PACK_LIMIT", 96 * 1024)
    monkeypatch.setattr(chunks_mod, "MAX_RUN", 64 * 1024)
    url = str(tmp_path / "remote")
    with new_repo(tmp_path / "a") as a:
        versions = commit_series(a, Series(tmp_path / "ck"), 3)
        a.remote_add("origin", url)
        a.push()
    with ckstore.clone(url, tmp_path / "reference") as ref:
        full = ref.last_transfer.bytes_received
    with new_repo(tmp_path / "b") as b:
        b.remote_add("origin", url)
        with pytest.raises(RemoteError, match="injected"):
            fetch_mod.fetch(b.engine, transport=Faulty(open_transport(url), fail_get_after=8))
        assert b.engine.refs.list() == {} and not list(b.engine.store.object_ids())      # no history yet...
        published = b.engine.store.pack_ids()
        assert published, "packs sealed before the failure stay"            # ...but the sealed packs stay
        kept = sum(pack_path(b.engine.store.packs_dir, p).stat().st_size for p in published)
        assert b.fsck(read_data=True).ok
        resumed = b.fetch()
        assert resumed.bytes_received <= full - kept + 64 * 1024, (resumed.bytes_received, full, kept)
        b.pull()
        for i, (oid, src) in enumerate(versions):
            b.checkout(oid, tmp_path / f"out{i}")
            assert same_tree(src, tmp_path / f"out{i}")
        assert b.fsck(read_data=True).ok


def test_transient_errors_are_retried(tmp_path):
    url = f"memory://flaky-{uuid.uuid4().hex}"
    with new_repo(tmp_path / "a") as a:
        versions = commit_series(a, Series(tmp_path / "ck"), 2)
        a.remote_add("origin", url)
        up = Faulty(open_transport(url), flaky_every=3)
        push_mod.push(a.engine, transport=up)
        assert up.failed >= 3, "the push met too few injected faults to test retrying"
    with new_repo(tmp_path / "b") as b:
        b.remote_add("origin", url)
        down = Faulty(open_transport(url), flaky_every=3)
        fetch_mod.fetch(b.engine, transport=down)
        assert down.failed >= 3, "the fetch met too few injected faults to test retrying"
        b.pull()
        b.checkout("main", tmp_path / "out")
        assert same_tree(versions[-1][1], tmp_path / "out")
    forget_memory_transport(url.removeprefix("memory://"))


def test_clone_of_unreachable_s3_endpoint(tmp_path, monkeypatch):
    pytest.importorskip("obstore")
    s3_env(monkeypatch, tmp_path)
    endpoint = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(RemoteUnavailable) as info:
        ckstore.clone(f"s3://{BUCKET}/models", tmp_path / "c", endpoint_url=endpoint)
    assert endpoint in str(info.value) and "attempts" in str(info.value) and info.value.hint
    assert not (tmp_path / "c").exists()
    assert time.monotonic() - t0 < 30


# ------------------------------------------------------------------------------------------- partial clones
def test_partial_clone_fetches_one_tensor_then_the_rest_on_demand(tmp_path, remote):
    kind, url, opts = remote
    if kind not in ("directory", "s3-moto"):
        pytest.skip("one local and one S3 remote are enough here")
    rng = np.random.default_rng(5)
    tensors = {f"layers.{i}.weight": rng.standard_normal((256, 256)).astype(np.float32) for i in range(4)}
    src = tmp_path / "ck"
    make_safetensors(src / "model.safetensors", tensors)
    (src / "tokenizer.json").write_bytes(rng.bytes(200_000))
    with new_repo(tmp_path / "a") as a:
        a.commit(src, "four layers")
        a.remote_add("origin", url, **opts)
        a.push()
    size = tensors["layers.2.weight"].nbytes
    c = ckstore.clone(url, tmp_path / "c", filter="tensors=layers.2.*", **opts)
    with c:
        moved = c.last_transfer.bytes_received
        got = c.load(names=["layers.2.weight"])
        assert np.array_equal(got["layers.2.weight"], tensors["layers.2.weight"])
        assert c.last_transfer.action == "clone", "the selected tensor came with the clone"
        assert moved < size * 1.5 + 256 * 1024, (moved, size)
        print(f"\n[{kind}] partial clone: {moved} bytes received for a {size}-byte tensor "
              f"(of {sum(t.nbytes for t in tensors.values())} bytes of tensors + 200000 opaque)")
        assert c.remote_list()[0].partial == {"tensors": ["layers.2.*"]}
        report = c.fsck(read_data=True)  # chunks not fetched yet are expected in a partial clone, not damage
        assert report.ok and report.not_fetched > 0, report.problems
        one = c.load(names=["layers.0.weight"])          # another tensor: fetched on demand, just that one
        assert np.array_equal(one["layers.0.weight"], tensors["layers.0.weight"])
        assert c.last_transfer.action == "fetch-missing"
        assert c.last_transfer.bytes_received < size * 1.5 + 64 * 1024
        c.checkout("HEAD", tmp_path / "out")              # the whole commit: the rest arrives in one batch
        assert same_tree(src, tmp_path / "out")
        assert c.fsck(read_data=True).ok


def test_diff_of_some_tensors_in_a_metadata_only_clone_fetches_just_those(tmp_path):
    rng = np.random.default_rng(1)
    sd = {f"layers.{i}.weight": rng.standard_normal((256, 256)).astype(np.float32) for i in range(4)}
    with new_repo(tmp_path / "a") as a:
        a.commit(sd, "v1")
        sd["layers.1.weight"] = sd["layers.1.weight"] + 1
        a.commit(sd, "v2")
        a.remote_add("origin", str(tmp_path / "remote"))
        a.push()
    with ckstore.clone(str(tmp_path / "remote"), tmp_path / "m", metadata_only=True) as m:
        d = m.diff("HEAD~1", "HEAD", tensors=["layers.1.*"])  # a glob, as `diff --tensors` takes
        assert [c["name"] for c in d.tensors["changed"]] == ["layers.1.weight"]
        assert m.last_transfer.action == "fetch-missing"
        one = sd["layers.1.weight"].nbytes
        assert m.last_transfer.bytes_received < 2 * (one * 1.2 + 64 * 1024)  # that tensor in both, not all four


def test_metadata_only_clone_has_history_but_no_chunks(tmp_path):
    url = str(tmp_path / "remote")
    with new_repo(tmp_path / "a") as a:
        versions = commit_series(a, Series(tmp_path / "ck"), 3)
        a.remote_add("origin", url)
        a.push()
        stored = a.show().stored_bytes
    with ckstore.clone(url, tmp_path / "m", metadata_only=True) as m:
        assert m.last_transfer.chunks == 0 and not m.engine.store.pack_ids()
        assert m.last_transfer.bytes_received < 64 * 1024 < stored
        assert [e.id for e in m.log()] == [v for v, _ in reversed(versions)]
        shown = m.show()
        assert shown.logical_bytes > 0 and shown.stored_bytes == 0
        assert m.remote_list()[0].partial == {"tensors": []}
        data = b"".join(bytes(p) for p in m.cat("HEAD", "model.safetensors"))
        assert data == (versions[-1][1] / "model.safetensors").read_bytes()


# ------------------------------------------------------------------------------------------- pull, force
def test_pull_fast_forwards_and_refuses_divergence(tmp_path):
    url = str(tmp_path / "remote")
    series = Series(tmp_path / "ck")
    with new_repo(tmp_path / "a") as a:
        commit_series(a, series, 1)
        a.remote_add("origin", url)
        a.push()
        with ckstore.clone(url, tmp_path / "b") as b:
            commit_series(a, series, 1)
            a.push()
            res = b.pull()
            assert b.resolve("main") == a.resolve("main")
            assert any(r["ref"] == "refs/heads/main" and r["status"] == "updated" for r in res.refs)
            assert b.pull().commits == 0                                       # up to date
            # both move on: pull refuses to drop b's commit unless forced
            commit_series(a, series, 1)
            a.push()
            mine = commit_series(b, Series(tmp_path / "ck-b", 4), 1)[0][0]
            with pytest.raises(NonFastForward, match="diverged"):
                b.pull()
            assert b.resolve("main") == mine
            b.pull(force=True)
            assert b.resolve("main") == a.resolve("main")
            assert any(e["action"] == "pull-force" and e["old"] == mine for e in b.audit())
            # push --force the other way: audited locally and logged on the remote
            b.reset("main", "main~1", "replace the remote's tip", force=True)
            commit_series(b, Series(tmp_path / "ck-b2", 6), 1)
            with pytest.raises(NonFastForward, match="non-fast-forward"):
                b.push()
            res = b.push(force=True)
            assert res.refs_updated[0]["forced"]
            assert any(e["action"] == "push-force" for e in b.audit())
            logs = [json.loads(p.read_text()) for p in (tmp_path / "remote" / "logs" / "push").iterdir()]
            assert any(entry["forced"] and entry["new"] == b.resolve("main") for entry in logs)
            assert all({"user", "host", "time", "ref", "old", "new", "forced"} <= set(e) for e in logs)


# ------------------------------------------------------------------------------------------- registry
def test_remote_registry(tmp_path):
    with new_repo(tmp_path / "a") as a:
        spec = a.remote_add("origin", "rel/path")
        assert Path(spec.url).is_absolute()
        a.remote_add("s3", "s3://bucket/prefix", endpoint_url="http://127.0.0.1:9000", region="eu-west-1")
        with pytest.raises(AlreadyExists, match="already exists"):
            a.remote_add("origin", "/elsewhere")
        with pytest.raises(UsageError):
            a.remote_add("bad/name", "/x")
        saved = json.loads((a.dir / "remotes.json").read_text())
        assert saved["s3"] == {"url": "s3://bucket/prefix", "endpoint_url": "http://127.0.0.1:9000",
                               "region": "eu-west-1", "partial": None}
        a.engine.refs.update("refs/remotes/origin/main", b"\1" * 32, None, action="fetch")
        a.remote_remove("origin")
        assert [s.name for s in a.remote_list()] == ["s3"]
        assert a.engine.refs.read("refs/remotes/origin/main") is None
        with pytest.raises(UsageError, match="no remote named"):
            a.fetch("origin")
    with pytest.raises(UsageError):
        select.parse_filter("layers=*")
    assert select.parse_filter(["tensors=a*,b*", "tensors=c"]) == {"tensors": ["a*", "b*", "c"]}


# ------------------------------------------------------------------------------------------- the command
_BESIDE = Path(sys.executable).parent / "ckstore"   # this interpreter's console script (no pyenv shim in between)
CKSTORE = str(_BESIDE) if _BESIDE.is_file() else shutil.which("ckstore")


@pytest.mark.skipif(CKSTORE is None, reason="the ckstore console script is not installed")
def test_cli_round_trip(tmp_path):
    env = {**os.environ, "CKSTORE_AUTHOR": "cli@example"}

    def run(*args, cwd=tmp_path, check=True):
        p = subprocess.run([CKSTORE, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=120)
        if check:
            assert p.returncode == 0, (args, p.stdout, p.stderr)
        return p

    series = Series(tmp_path / "ck")
    run("init", "a", "--chunk-size", CHUNK)
    v0 = series.next()
    run("commit", v0, "-m", "v0", cwd=tmp_path / "a")
    run("remote", "add", "origin", tmp_path / "remote", cwd=tmp_path / "a")
    assert "origin" in run("remote", "list", cwd=tmp_path / "a").stdout
    pushed = json.loads(run("push", "--json", cwd=tmp_path / "a").stdout)
    assert pushed["action"] == "push" and pushed["bytes_sent"] > 0 and pushed["refs"][0]["status"] == "created"
    cloned = json.loads(run("clone", tmp_path / "remote", "b", "--json").stdout)
    assert cloned["commits"] == 1 and Path(cloned["path"]) == tmp_path / "b"
    v1 = series.next()
    run("commit", v1, "-m", "v1", cwd=tmp_path / "a")
    text = run("push", "origin", "main", cwd=tmp_path / "a").stdout
    assert "sent" in text and "logical" in text
    pulled = json.loads(run("pull", "--json", cwd=tmp_path / "b").stdout)
    assert pulled["commits"] == 1 and pulled["bytes_received"] > 0
    run("checkout", "main", "-o", tmp_path / "out", cwd=tmp_path / "b")
    assert same_tree(v1, tmp_path / "out")
    fetched = json.loads(run("fetch", "--json", cwd=tmp_path / "b").stdout)
    assert fetched["commits"] == 0
    partial = run("clone", tmp_path / "remote", "p", "--filter", "tensors=head.*")
    assert "cloned" in partial.stdout
    assert "partial: head.*" in run("remote", "list", cwd=tmp_path / "p").stdout
    fail = run("clone", tmp_path / "nowhere", "x", check=False)
    assert fail.returncode == 1 and "error:" in fail.stderr and not (tmp_path / "x").exists()
