"""T2 power loss (CI tier): `ckstore commit` and `ckstore push` to a directory remote are recorded with strace, and
power-loss states are rebuilt from the recording (tests/powerloss.py: unsynced writes dropped or torn, unsynced
directory entries undone). Every state must open and pass `fsck --read-data`; only the unacknowledged operation may
be lost: the history before it is intact, each commit checks out byte-identical, and once the command had exited 0
its commit (or pushed ref) survives every state. tests/soak/test_soak_powerloss.py checks every state of every
prefix; here, every prefix's fully-synced state and every state of a few prefixes (the first durable points and
the end)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

import powerloss as pl
from ckstore import Repo
from crash_worker import make_checkpoint, tree_bytes

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import test_reliability as rel  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is needed to record file operations")
CKSTORE = shutil.which("ckstore") or "ckstore"


def _checkouts(repo: Repo, history: list[str], ids: dict[str, str], srcs: dict[str, Path], work: Path) -> None:
    for m in history:
        dest = work / f"co-{m}"
        if dest.exists():
            shutil.rmtree(dest)
        repo.checkout(ids[m], dest)
        assert tree_bytes(dest) == tree_bytes(srcs[m]), f"checkout of {m} differs from its source"
        shutil.rmtree(dest)


# -- commit --------------------------------------------------------------------------------------------------------

def prepare_commit(work: Path) -> tuple[list[str], list[Path], dict]:
    """A repository with b0 and b1 on main; the command commits `new` (sharing a tensor with them)."""
    srcs = {m: make_checkpoint(work / "src" / m, 70 + i, shared_seed=7) for i, m in enumerate(["b0", "b1", "new"])}
    repo = work / "repo"
    with Repo.init(repo, chunk_size=rel.CHUNK) as r:
        ids = {m: rel.commit(r, srcs[m], m) for m in ("b0", "b1")}
    ctx = {"repo": repo, "srcs": srcs, "ids": ids, "work": work / "check", "seen": {}}
    (work / "check").mkdir()
    return [CKSTORE, "-C", str(repo), "commit", str(srcs["new"]), "-m", "new"], [repo], ctx


def check_commit(ctx: dict, acked: bool) -> None:
    with Repo.open(ctx["repo"]) as r:
        report = r.fsck(read_data=True)
        assert report.ok, [str(p) for p in report.problems]
        history = [c.message for c in r.log("main")]
        assert history in (["b1", "b0"], ["new", "b1", "b0"]), history
        if acked:
            assert history[0] == "new", "the acknowledged commit was lost"
        ids = dict(ctx["ids"], **({"new": r.resolve("main")} if history[0] == "new" else {}))
        _checkouts(r, history, ids, ctx["srcs"], ctx["work"])


COMMIT = pl.Scenario("commit", prepare_commit, check_commit, env={"CKSTORE_AUTHOR": "tester@test"})


# -- push to a directory remote -------------------------------------------------------------------------------------

def prepare_push(work: Path) -> tuple[list[str], list[Path], dict]:
    """A has b0, b1 pushed to a directory remote, then `new` committed; the command pushes main."""
    srcs = {m: make_checkpoint(work / "src" / m, 80 + i, shared_seed=8) for i, m in enumerate(["b0", "b1", "new"])}
    a, remote = work / "a", work / "remote"
    with Repo.init(a, chunk_size=rel.CHUNK) as r:
        ids = {m: rel.commit(r, srcs[m], m) for m in ("b0", "b1")}
        r.remote_add("origin", str(remote))
        r.push("origin", ["main"])
        ids["new"] = rel.commit(r, srcs["new"], "new")
    (work / "check").mkdir()
    ctx = {"repo": a, "remote": remote, "srcs": srcs, "ids": ids, "work": work / "check", "seen": {}}
    return [CKSTORE, "-C", str(a), "push", "origin", "main"], [a, remote], ctx


def check_push(ctx: dict, acked: bool) -> None:
    with Repo.open(ctx["repo"]) as r:
        report = r.fsck(read_data=True)
        assert report.ok, [str(p) for p in report.problems]
        assert [c.message for c in r.log("main")] == ["new", "b1", "b0"]
        remote_report = r.fsck(remote="origin", read_data=True)
        assert remote_report.ok, [str(p) for p in remote_report.problems]
    tip = (ctx["remote"] / "refs" / "heads" / "main").read_text().strip()
    by_id = {v: k for k, v in ctx["ids"].items()}
    assert tip in by_id and by_id[tip] in ("b1", "new"), f"remote main holds {tip}"
    if acked:
        assert by_id[tip] == "new", "the acknowledged push was lost"
    key = pl.digest({str(p): (p.read_bytes() if p.is_file() else None) for p in sorted(ctx["remote"].rglob("*"))})
    if key in ctx["seen"]:  # this remote state was cloned and checked out already
        return
    dest = ctx["work"] / "clone"
    if dest.exists():
        shutil.rmtree(dest)
    import ckstore
    with ckstore.clone(str(ctx["remote"]), dest) as seen:
        history = [c.message for c in seen.log("main")]
        assert history == (["new", "b1", "b0"] if by_id[tip] == "new" else ["b1", "b0"]), history
        _checkouts(seen, history, ctx["ids"], ctx["srcs"], ctx["work"])
    shutil.rmtree(dest)
    ctx["seen"][key] = True


PUSH = pl.Scenario("push-directory", prepare_push, check_push, env={"CKSTORE_AUTHOR": "tester@test"})


# -- gc after forget -------------------------------------------------------------------------------------------------

def prepare_gc(work: Path) -> tuple[list[str], list[Path], dict]:
    """b0..b2 on main, forget keeps the last one; the command is `gc --now` (sweeps, repacks, frees)."""
    srcs = {m: make_checkpoint(work / "src" / m, 90 + i, shared_seed=9) for i, m in enumerate(["b0", "b1", "b2"])}
    repo = work / "repo"
    from ckstore.model.retention import Policy
    with Repo.init(repo, chunk_size=rel.CHUNK) as r:
        ids = {m: rel.commit(r, srcs[m], m) for m in ("b0", "b1", "b2")}
        r.forget(Policy(keep_last=1))
    (work / "check").mkdir()
    ctx = {"repo": repo, "srcs": srcs, "ids": ids, "work": work / "check", "seen": {}}
    return [CKSTORE, "-C", str(repo), "gc", "--now"], [repo], ctx


def check_gc(ctx: dict, acked: bool) -> None:
    with Repo.open(ctx["repo"]) as r:
        report = r.fsck(read_data=True)
        assert report.ok, [str(p) for p in report.problems]
        history = [c.message for c in r.log("main")]
        assert history == ["b2"], history  # what survives retention survives any power loss of gc
        _checkouts(r, history, ctx["ids"], ctx["srcs"], ctx["work"])


GC = pl.Scenario("gc", prepare_gc, check_gc, env={"CKSTORE_AUTHOR": "tester@test"})
SCENARIOS = [COMMIT, PUSH, GC]


def ci_prefixes(rec: pl.Recording) -> list[int]:
    """The prefixes whose every state the CI tier checks: after the first two durable points, just before each of
    the last four (the ref update, whose unsynced audit entry, ref and directory entries can be torn or lost), and
    at the end."""
    syncs = [i + 1 for i, op in enumerate(rec.ops) if op.kind in ("sync", "syncall")]
    return sorted({*syncs[:2], *(s - 1 for s in syncs[-4:]), len(rec.ops)})


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_power_loss_states(scenario: pl.Scenario, tmp_path: Path) -> None:
    """Every state of the CI prefixes, and the fully synced ('durable') state of every prefix."""
    full = pl.sweep(scenario, tmp_path / "a", prefixes=ci_prefixes)
    assert full.durable_points >= 4 and full.distinct >= 4, (full.durable_points, full.distinct)
    every = pl.sweep(scenario, tmp_path / "b", variants=("durable",))
    assert every.distinct >= 3


def test_recorder_sees_every_kind_of_operation(tmp_path: Path) -> None:
    """The recorder against a known program: data, truncation, O_APPEND, renames, links, mkdir, syncs, threads."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "old").write_bytes(b"old contents")
    prog = f"""
import os, threading
r = {str(root)!r}
fd = os.open(r + '/a', os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
os.write(fd, b'hello world'); os.pwrite(fd, b'HE', 0); os.writev(fd, [b'!', b'?'])
os.fsync(fd); os.ftruncate(fd, 5); os.close(fd)
os.mkdir(r + '/d')
os.rename(r + '/a', r + '/d/a')
d = os.open(r + '/d', os.O_RDONLY | os.O_DIRECTORY); os.fsync(d)
os.link(r + '/d/a', r + '/b')
with open(r + '/old', 'ab') as f:
    t = threading.Thread(target=lambda: f.write(b' appended') and f.flush()); t.start(); t.join()
os.unlink(r + '/b')
"""
    rec = pl.record([sys.executable, "-c", prog], [root])
    assert rec.returncode == 0, rec.stderr
    final = pl.build(rec, pl.State(len(rec.ops), "volatile", frozenset(), None))
    r = str(root)
    assert final == {r: None, f"{r}/d": None, f"{r}/d/a": b"HEllo", f"{r}/old": b"old contents appended"}
    durable = pl.build(rec, pl.State(len(rec.ops), "durable", frozenset(
        i for i in range(len(rec.ops)) if i not in pl.durable_set(rec.ops, len(rec.ops))), None))
    # d/a's name was fsynced in d/, but d/ itself never in root/: the whole directory can vanish
    assert durable == {r: None, f"{r}/old": b"old contents"}, durable
    mid = [s for s in pl.states(rec) if s.variant == "names-not-data"]
    trees = [pl.build(rec, s) for s in mid]
    assert any(t.get(f"{r}/a") == b"HEllo world!?" for t in trees)  # after the data fsync, before the truncate
    torn = [pl.build(rec, s) for s in pl.states(rec) if s.variant == "torn"]
    assert any(t.get(f"{r}/a") == b"hello" for t in torn)  # the first write, torn in half


def test_torn_audit_append_is_cut_off_not_damage(tmp_path: Path) -> None:
    """Power lost between an audit append's write and its fsync: the entry's bytes are partly on disk, its ref never
    moved. fsck accepts that, and the next ref change cuts the torn bytes off and chains to the last whole entry
    (before: every later ref change failed on the unparseable last line)."""
    srcs = [make_checkpoint(tmp_path / "src" / str(i), 90 + i) for i in range(2)]
    with Repo.init(tmp_path / "repo", chunk_size=rel.CHUNK) as r:
        rel.commit(r, srcs[0], "c0")
        log = r.dir / "logs" / "audit"
        whole = log.read_bytes()
        with open(log, "ab") as f:
            f.write(b'{"action":"commit","hash":"ab12')  # the front of an append that never finished
        assert r.fsck(read_data=True).ok
        rel.commit(r, srcs[1], "c1")
        assert log.read_bytes().startswith(whole) and log.read_bytes().endswith(b"\n")
        assert [e.seq for e in r.audit()][-2:] in ([1, 2], [2, 1])
        assert r.fsck(read_data=True).ok and [c.message for c in r.log()] == ["c1", "c0"]
