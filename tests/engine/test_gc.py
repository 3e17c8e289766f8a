"""forget, gc and du on real repositories: what is kept, what is freed, tombstones, revival, leases, crashes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ckstore import Repo
from ckstore.engine.gc import gc as engine_gc
from ckstore.errors import DamagedRef, LockTimeout, UsageError
from ckstore.model.retention import Policy
from conftest import make_safetensors


def versions(tmp_path: Path, n: int, *, size: int = 60_000, seed: int = 0) -> list[Path]:
    """n checkpoints whose tensors are all new each time (no deltas, no dedup): freed bytes are exact."""
    rng = np.random.default_rng(seed)
    return [make_safetensors(tmp_path / f"v{i}.safetensors",
                             {"a": rng.standard_normal(size).astype(np.float32),
                              "b": rng.standard_normal(size // 2).astype(np.float32)}) for i in range(n)]


def digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes()).hexdigest()


def disk_bytes(repo: Repo) -> int:
    return sum(p.stat().st_size for sub in ("packs", "objects") for p in (repo.dir / sub).rglob("*") if p.is_file())


@pytest.fixture
def filled(tmp_path):
    repo = Repo.init(tmp_path / "repo")
    files = versions(tmp_path, 5)
    for i, f in enumerate(files):
        repo.commit(f, f"v{i}", metrics={"loss": [0.9, 0.2, 0.5, 0.4, 0.6][i]}, step=i)
    yield repo, files
    repo.close()


def test_du_total_is_the_bytes_on_disk(filled):
    repo, _ = filled
    report = repo.du()
    assert report.disk["total"] == disk_bytes(repo)
    assert report.disk["reclaimable"] == 0
    assert len(report.rows) == 5 and all(r.unique > 0 and r.stored >= r.unique for r in report.rows)
    assert sum(r.unique for r in report.rows) == report.disk["referenced"]  # nothing shared between versions


def test_forget_then_gc_frees_what_was_predicted(filled):
    repo, files = filled
    before = disk_bytes(repo)
    dry = repo.forget(Policy(keep_last=2), dry_run=True)
    assert [c.kept for c in dry.commits] == [True, True, False, False, False]
    assert [c.message for c in repo.log()] == ["v4", "v3", "v2", "v1", "v0"]  # a dry run changes nothing
    done = repo.forget(Policy(keep_last=2))
    assert done.bytes_freed == dry.bytes_freed > 0
    assert [c.message for c in repo.log()] == ["v4", "v3"]
    assert repo.log()[-1].dropped_parents  # "parent dropped by retention"
    result = repo.gc(now=True)
    freed = before - disk_bytes(repo)
    assert abs(freed - done.bytes_freed) <= 0.01 * done.bytes_freed, (freed, done.bytes_freed)
    assert result.bytes_freed > 0 and result.tombstoned_bytes == 0
    assert repo.fsck(read_data=True).ok
    for c, src in zip(repo.log(), [files[4], files[3]]):
        out = repo.root.parent / f"out-{c.message}"
        repo.checkout(c.id, out)
        assert digest(out / src.name) == digest(src)
    assert repo.du().disk["total"] == disk_bytes(repo)


def test_keep_best_keeps_best_and_latest(filled):
    repo, _ = filled
    repo.forget(Policy(keep_best=2, metric="loss"))
    assert [c.message for c in repo.log()] == ["v4", "v3", "v1"]  # best: v1 (0.2), v3 (0.4); v4 is the tip


def test_tags_are_kept_unless_told(filled):
    repo, _ = filled
    repo.tag("release", "HEAD~4")
    repo.forget(Policy(keep_last=1))
    assert [c.message for c in repo.log(all=True)] == ["v4", "v0"]
    result = repo.forget(Policy(keep_last=1, keep_tagged=False))
    assert result.refs_deleted == ["tags/release"] and [t.name for t in repo.tags()] == []
    assert any(e.action == "forget" and e.ref == "refs/tags/release" for e in repo.audit())


def test_history_stays_readable_after_gc_deleted_dropped_commits(filled):
    repo, _ = filled
    repo.tag("old", "HEAD~3")  # v1
    repo.forget(Policy(keep_last=1))
    repo.gc(now=True)
    assert [c.message for c in repo.log()] == ["v4", "v1"]  # v4 -> (v3, v2 dropped) -> v1
    assert repo.resolve("HEAD~1") == repo.resolve("old")
    assert repo.fsck().ok


def test_saved_policy_and_auto(filled, tmp_path):
    repo, _ = filled
    with pytest.raises(UsageError, match="no retention policy is saved"):
        repo.forget()
    repo.forget(Policy(keep_last=3), save=True, auto=True)
    assert repo.config.retention["auto"] is True
    with Repo.open(repo.root) as again:
        assert again.config.retention["policy"]["keep_last"] == 3
        assert again.fsck().ok  # the config's checksum covers the saved policy
    new = versions(tmp_path / "more", 1, seed=9)[0]
    repo.commit(new, "v5")  # auto: the policy runs after the commit
    assert [c.message for c in repo.log()] == ["v5", "v4", "v3"]


def test_reset_force_is_kept_for_the_grace_period(filled):
    repo, _ = filled
    gone = repo.resolve("HEAD")
    repo.reset("main", "HEAD~1", "oops", force=True)
    repo.gc()  # the default grace: the audit log's recent ref values are roots
    assert repo.engine.store.has_object(bytes.fromhex(gone))
    repo.gc(now=True)
    assert not repo.engine.store.has_object(bytes.fromhex(gone))
    assert repo.fsck(read_data=True).ok


def _age(repo: Repo, seconds: float) -> None:
    """Make everything stored look `seconds` old (gc's grace works on file times)."""
    t = time.time() - seconds
    for sub in ("packs", "objects"):
        for p in (repo.dir / sub).rglob("*"):
            os.utime(p, (t, t))


def test_two_phases_tombstones_then_deletion(filled):
    repo, _ = filled
    repo.forget(Policy(keep_last=1))
    before = disk_bytes(repo)
    first = repo.gc()  # everything is young: nothing moves
    assert first.packs_swept == 0 and first.young_skipped > 0
    _age(repo, 7200)
    second = repo.gc()
    assert second.packs_swept == 4 and second.bytes_freed == 0 and second.tombstoned_bytes > 0
    assert disk_bytes(repo) < before and repo.fsck(read_data=True).ok
    clock = lambda: time.time() + 7200  # noqa: E731  (two hours later)
    third = engine_gc(repo.engine, clock=clock)
    assert third.sets_deleted == 1 and third.bytes_freed == second.tombstoned_bytes and third.tombstoned_bytes == 0


def test_a_commit_revives_a_tombstoned_chunk(filled):
    repo, files = filled
    repo.forget(Policy(keep_last=1))
    _age(repo, 7200)
    repo.gc()
    stones = list((repo.dir / "tombstones").rglob("*.pack"))
    assert len(stones) == 4
    done = repo.commit(files[0], "v0 again")  # the same bytes as a dropped version
    assert done.new_bytes == 0  # deduplicated against the tombstoned pack, which came back
    assert len(list((repo.dir / "tombstones").rglob("*.pack"))) == 3
    engine_gc(repo.engine, clock=lambda: time.time() + 7200)
    assert repo.fsck(read_data=True).ok
    out = repo.root.parent / "again"
    repo.checkout("HEAD", out)
    assert digest(out / files[0].name) == digest(files[0])


def test_dry_run_deletes_nothing(filled):
    repo, _ = filled
    repo.forget(Policy(keep_last=1))
    before = disk_bytes(repo)
    result = repo.gc(now=True, dry_run=True)
    assert result.packs_swept == 4 and disk_bytes(repo) == before and not (repo.dir / "tombstones").exists()


HOLD = """
import sys, time
from ckstore import Repo
with Repo.open(sys.argv[1]) as repo, repo.engine.writing("test"):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_gc_never_sweeps_under_a_live_writer(filled):
    repo, _ = filled
    repo.forget(Policy(keep_last=1))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(repo.root), "30"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(LockTimeout, match="gc --now refused"):
            repo.gc(now=True)
        with pytest.raises(LockTimeout, match="writer"):
            repo.gc(grace=0, wait=0.3)
        assert not (repo.dir / "tombstones").exists()
    finally:
        holder.kill()
        holder.wait()
    assert repo.gc(now=True).packs_swept == 4  # a killed holder's lease is stale at once (same host, dead pid)


def test_a_writer_waits_for_a_sweep(filled, tmp_path):
    repo, _ = filled
    leases = repo.engine.leases
    with leases.sweep(wait=1):
        with pytest.raises(LockTimeout, match="gc is sweeping"):
            with leases.writer("commit", wait=0.2):
                pass
    with leases.writer("commit", wait=0.2):
        assert (repo.dir / "locks").is_dir()


def test_gc_refuses_a_partial_clone(tmp_path, filled):
    repo, _ = filled
    remote = tmp_path / "remote"
    repo.remote_add("origin", str(remote))
    repo.push("origin")
    from ckstore import clone
    with clone(str(remote), tmp_path / "partial", metadata_only=True) as part:
        with pytest.raises(UsageError, match="partial clone"):
            part.gc(now=True)


def test_gc_refuses_on_a_damaged_ref(filled):
    repo, _ = filled
    (repo.dir / "refs/heads/broken").write_text("not an id\n")
    with pytest.raises(DamagedRef, match="^damaged refs/heads/broken: holds") as caught:
        repo.gc(now=True)
    assert "gc sweeps nothing while a ref is damaged" in caught.value.hint


GC_WORKER = """
import sys
from ckstore import Repo
with Repo.open(sys.argv[1]) as repo:
    repo.gc(now=True)
"""


def test_gc_killed_at_every_io_step_leaves_the_repository_clean(tmp_path):
    src = versions(tmp_path, 4)
    base = tmp_path / "base"
    with Repo.init(base) as repo:
        for i, f in enumerate(src):
            repo.commit(f, f"v{i}")
        repo.forget(Policy(keep_last=2))
    steps, k = [], 1
    while True:
        work = tmp_path / f"run{k}"
        subprocess.run(["cp", "-a", str(base), str(work)], check=True)
        r = subprocess.run([sys.executable, "-c", GC_WORKER, str(work)], env={**os.environ, "CKSTORE_CRASH_AT": str(k)},
                           capture_output=True, text=True)
        with Repo.open(work) as repo:
            report = repo.fsck(read_data=True)
            assert report.ok, (k, [str(p) for p in report.problems])
            assert [c.message for c in repo.log()] == ["v3", "v2"]
            for c, f in zip(repo.log(), [src[3], src[2]]):
                repo.checkout(c.id, work.parent / f"out{k}-{c.message}")
                assert digest(work.parent / f"out{k}-{c.message}" / f.name) == digest(f)
            repo.gc(now=True)  # the next gc finishes the job
            assert repo.fsck(read_data=True).ok
            assert not list((repo.dir / "tombstones").rglob("*.pack"))
        subprocess.run(["rm", "-rf", str(work)], check=True)
        steps.append(k)
        if r.returncode == 0:
            break
        assert r.returncode == 137, r.stderr
        k += 1
    assert len(steps) > 5  # the sweep has many durable steps; each was a crash point


def test_fsck_names_a_damaged_record_and_walks_treat_it_as_kept(filled):
    repo, _ = filled
    repo.forget(Policy(keep_last=2))
    victim = next((repo.dir / "dropped").iterdir())
    victim.write_bytes(b"\xff garbage")
    with Repo.open(repo.root) as again:
        report = again.fsck()
        assert [p.kind for p in report.problems] == ["record"] and victim.name in report.problems[0].id
        assert len(again.log()) == 3  # the damaged record's commit is history again, not lost


def test_du_by_remote_counts_replicas_and_names_commits_short_of_the_minimum(filled, tmp_path):
    repo, _ = filled
    repo.remote_add("one", str(tmp_path / "r1"))
    repo.remote_add("two", str(tmp_path / "r2"))
    repo.push("one")
    repo.reset("main", "HEAD~1", "only part goes to two", force=True)
    repo.push("two")
    repo.reset("main", repo.engine.refs.read("refs/remotes/one/main").hex(), "back", force=True)
    from ckstore.storage import remotes
    remotes.set_min_replicas(repo.dir, 2)
    by_remote = {r.name: r.commits for r in repo.du(by="remote").rows}
    assert by_remote == {"one": 5, "two": 4}
    rows = {r.name: r.extra["replicas"] for r in repo.du().rows}
    assert sorted(rows.values()) == [1, 2, 2, 2, 2]
    assert "1 commits are on fewer than 2 remotes" in repo.du().disk["warnings"][0]


def test_repair_after_retention_finds_nothing_missing(filled):
    repo, _ = filled
    repo.forget(Policy(keep_last=2))
    repo.gc(now=True)  # the dropped commits' objects are gone: that is retention, not damage
    done = repo.repair()
    assert done.ok and done.missing_objects == 0 and done.missing_chunks == 0
