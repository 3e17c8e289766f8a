"""Reliability: crash consistency, bit rot, concurrent writers, audit tamper evidence, hostile manifest paths.

Real parts only: real LMDB under tmp_path, real files, real subprocesses (tests/crash_worker.py).
The default tier runs a few seeded cases of each; `soak` variants (CKSTORE_SOAK=1) run the full counts.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import blake3
import pytest
import zstandard

from ckstore import Repo
from ckstore.model import codec
from ckstore.errors import CkstoreError, DamagedRef, IntegrityError, UnsafePath
from ckstore.model.objects import Commit, Inline, FileRecipe, Manifest, hash_bytes
from ckstore.storage.packs import ENTRY, FOOTER, pack_path, parse_idx

HERE = Path(__file__).resolve().parents[1]  # tests/
PROJECT = HERE.parent
WORKER = HERE / "crash_worker.py"
from crash_worker import make_checkpoint, tree_bytes  # noqa: E402

from conftest import SOAK, soak, skip_unless_soak  # noqa: E402,F401
CHUNK = 65536
MAIN = "refs/heads/main"


# -- helpers --------------------------------------------------------------------------------------------------------


def worker_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CKSTORE_CRASH_AT", None)
    env["PYTHONPATH"] = str(PROJECT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["CKSTORE_AUTHOR"] = "tester@test"
    env.update(extra)
    return env


def run_worker(*args: object, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(WORKER), *map(str, args)], env=worker_env(**env),
                          capture_output=True, text=True, timeout=timeout, cwd=PROJECT)


def commit(repo: Repo, src: Path, message: str, **kw) -> str:
    return repo.commit(src, message, capture_env=False, **kw).id


def leftovers(dest: Path) -> list[str]:
    """Temporary checkout files anywhere under dest."""
    return [p.name for p in dest.rglob("*") if ".ckstore-tmp-" in p.name] if dest.exists() else []


def assert_checkout_identical(repo: Repo, rev: str, src: Path, dest: Path) -> None:
    repo.checkout(rev, dest)
    assert tree_bytes(dest) == tree_bytes(src), f"checkout of {rev} differs from its source {src}"
    shutil.rmtree(dest)


def assert_failed_checkout_clean(repo: Repo, rev: str, src: Path, dest: Path,
                                 error: type[BaseException] = CkstoreError) -> None:
    """Checkout must raise; no temp file may remain and nothing corrupt or partial may sit under a final name."""
    with pytest.raises(error):
        repo.checkout(rev, dest)
    assert leftovers(dest) == []
    want = tree_bytes(src)
    for name, data in tree_bytes(dest).items() if dest.exists() else ():
        assert want.get(name) == data, f"{name} left under its final name with wrong content after a failed checkout"
    shutil.rmtree(dest, ignore_errors=True)


def lock_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in (root / ".ckstore").rglob("*.lock"))


# -- T1: crash sweep and SIGKILL ------------------------------------------------------------------------------------


@dataclass
class CrashBase:
    root: Path  # directory holding the template repository "repo" (one commit, "base")
    srcs: dict[str, Path]
    steps: int  # durable I/O steps of a full commit of srcs["new"]
    seconds: float  # wall time of that commit (without interpreter start-up)


@pytest.fixture(scope="module")
def crash_base(tmp_path_factory: pytest.TempPathFactory) -> CrashBase:
    d = tmp_path_factory.mktemp("crash")
    srcs = {"base": make_checkpoint(d / "src" / "base", 1, scale=4),
            # "new" and "after" share the embedding with "base" (dedup): only their other tensors are new chunks.
            "new": make_checkpoint(d / "src" / "new", 2, scale=4, shared_seed=1 + 10_000),
            "after": make_checkpoint(d / "src" / "after", 3, scale=4, shared_seed=1 + 10_000)}
    with Repo.init(d / "repo", chunk_size=CHUNK) as repo:
        commit(repo, srcs["base"], "base")
    shutil.copytree(d / "repo", d / "clean")
    p = run_worker("commit", d / "clean", srcs["new"], "new")
    assert p.returncode == 0, p.stderr
    _, seconds, _, before, after = p.stdout.split("\n")[1].split()
    shutil.rmtree(d / "clean")
    return CrashBase(d, srcs, int(after) - int(before), float(seconds))


def check_after_crash(case: Path, base: CrashBase, work: Path) -> list[str]:
    """The parent's view after a crashed commit: fsck clean, all-or-nothing history, byte-identical checkouts,
    and a following commit succeeds without manual unlocking. Returns the history (messages) found."""
    with Repo.open(case) as repo:
        report = repo.fsck(read_data=True)
        assert report.ok, [str(p) for p in report.problems]
        history = [c.message for c in repo.log()]
        assert history in (["base"], ["new", "base"]), history
        for c in repo.log():
            assert_checkout_identical(repo, c.id, base.srcs[c.message], work / c.id)
        commit(repo, base.srcs["after"], "after")
        assert [c.message for c in repo.log()] == ["after", *history]
        assert repo.fsck(read_data=True).ok
        assert_checkout_identical(repo, "HEAD", base.srcs["after"], work / "after")
    assert lock_files(case) == []
    return history


def test_crash_sweep_every_io_step(crash_base: CrashBase, tmp_path: Path) -> None:
    """Die at each durable I/O step N = 1.. of a commit in turn; the repository must survive every one, and at
    N = steps + 1 the commit runs to completion. Two crash points are worked on at a time (2 cores)."""
    base = crash_base
    assert base.steps >= 10, f"a commit of many chunks should take many I/O steps, counted {base.steps}"

    def crash_at(n: int) -> list[str] | None:
        case = tmp_path / f"n{n}"
        shutil.copytree(base.root / "repo", case)
        p = run_worker("commit", case, base.srcs["new"], "new", CKSTORE_CRASH_AT=str(n))
        if n > base.steps:
            assert p.returncode == 0, f"step {n}: the commit should have completed\n{p.stderr}"
            return None
        assert p.returncode == 137, f"step {n}: rc {p.returncode}\n{p.stderr}"
        history = check_after_crash(case, base, tmp_path / f"co{n}")
        shutil.rmtree(case)
        return history

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(crash_at, range(1, base.steps + 2)))
    seen = results[:-1]
    # All-or-nothing and monotone: the new commit appears at one step and stays visible at every later one.
    visible = [len(h) == 2 for h in seen]
    assert visible == sorted(visible), seen
    assert not visible[0] and visible[-1], "expected the crash points to cover both before and after the ref move"


def sigkill_round(base: CrashBase, case: Path, work: Path, rng: random.Random) -> list[str]:
    shutil.copytree(base.root / "repo", case)
    proc = subprocess.Popen([sys.executable, str(WORKER), "commit", str(case), str(base.srcs["new"]), "new"],
                            env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0, base.seconds * 1.3))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    history = check_after_crash(case, base, work)
    shutil.rmtree(case)
    return history


def test_sigkill_at_random_moments(crash_base: CrashBase, tmp_path: Path) -> None:
    rng = random.Random(1234)
    for i in range(3):
        sigkill_round(crash_base, tmp_path / f"k{i}", tmp_path / "co", rng)


@soak
@skip_unless_soak
def test_sigkill_at_random_moments_soak(crash_base: CrashBase, tmp_path: Path) -> None:
    rng = random.Random(98765)
    outcomes = [sigkill_round(crash_base, tmp_path / f"k{i}", tmp_path / "co", rng) for i in range(200)]
    assert any(len(h) == 1 for h in outcomes) and any(len(h) == 2 for h in outcomes)


def test_crash_never_leaves_an_unaudited_ref_change(crash_base: CrashBase, tmp_path: Path) -> None:
    """The audit entry is written (as an intent) before the ref moves: after a crash between the two the ref still
    holds the entry's old value, which fsck accepts; it never holds a value no entry records."""
    base = crash_base
    for n in range(base.steps - 4, base.steps + 1):  # the audit append and the ref write, around them
        case = tmp_path / f"n{n}"
        shutil.copytree(base.root / "repo", case)
        p = run_worker("commit", case, base.srcs["new"], "new", CKSTORE_CRASH_AT=str(n))
        assert p.returncode == 137
        with Repo.open(case) as repo:
            head = repo.engine.refs.read(MAIN).hex()
            last = [e for e in repo.audit() if e["ref"] == MAIN][-1]
            assert head in (last["new"], last["old"]), f"crash at step {n}: {MAIN} is {head[:12]}, unrecorded"
            assert repo.fsck().ok, f"crash at step {n}: {repo.fsck().problems}"


# -- T3: bit rot ----------------------------------------------------------------------------------------------------


@dataclass
class RotBase:
    root: Path  # template repository
    srcs: dict[str, Path]  # message -> source dir
    commits: dict[str, str]  # commit id -> message
    chunks: dict[str, set[bytes]]  # commit id -> chunk ids its manifest needs
    manifests: dict[str, bytes]  # commit id -> manifest id
    packs: dict[bytes, list]  # pack id -> entries (from its .idx)


@pytest.fixture(scope="module")
def rot_base(tmp_path_factory: pytest.TempPathFactory) -> RotBase:
    d = tmp_path_factory.mktemp("rot")
    srcs = {"c1": make_checkpoint(d / "src" / "c1", 11, scale=2),
            "c2": make_checkpoint(d / "src" / "c2", 12, scale=2, shared_seed=11 + 10_000),  # shares c1's embedding
            "c3": make_checkpoint(d / "src" / "c3", 13, scale=2)}
    commits, chunks, manifests = {}, {}, {}
    with Repo.init(d / "repo", chunk_size=CHUNK) as repo:
        for msg, src in srcs.items():
            cid = commit(repo, src, msg)
            commits[cid] = msg
            chunks[cid] = repo.manifest(cid).chunk_ids()
            manifests[cid] = repo.engine.store.get_object(bytes.fromhex(cid)).manifest
        packs = {}
        for pid in repo.engine.store.pack_ids():
            packs[pid] = parse_idx(pack_path(repo.engine.store.packs_dir, pid, ".idx").read_bytes())[1]
    assert len(packs) == 3
    return RotBase(d / "repo", srcs, commits, chunks, manifests, packs)


def bad_frames(pack_file: Path, entries: list) -> set[bytes]:
    """Oracle: chunks whose frame, read at its recorded location, no longer decodes to bytes hashing to its id."""
    data = pack_file.read_bytes() if pack_file.exists() else b""
    bad = set()
    for e in entries:
        try:
            raw = codec.decode(data[e.offset:e.offset + e.length], e.raw_length, None)
            ok = blake3.blake3(bytes(raw)).digest() == e.chunk
        except Exception:
            ok = False
        if not ok:
            bad.add(e.chunk)
    return bad


def object_intact(path: Path, oid: bytes) -> bool:
    """Oracle: the damaged object file still decompresses to bytes hashing to its id."""
    try:
        raw = zstandard.ZstdDecompressor().decompress(path.read_bytes(), max_output_size=1 << 26)
    except zstandard.ZstdError:
        return False
    return hash_bytes(raw) == oid


@dataclass
class Damage:
    what: str
    names: set[str]  # a reported problem must carry one of these in its id or message
    affected: set[str]  # commit ids whose checkout must fail
    commit_object: str | None = None  # a damaged commit object: still served from a verified cache copy, if any


def flip_bit(path: Path, pos: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[pos] ^= 1 << bit
    path.write_bytes(bytes(data))


def apply_damage(kind: str, rng: random.Random, repo_root: Path, base: RotBase) -> Damage:
    d = repo_root / ".ckstore"
    pid = rng.choice(sorted(base.packs))
    entries = base.packs[pid]
    pfile = pack_path(d / "packs", pid)
    size = pfile.stat().st_size
    names = {pid.hex(), pid.hex()[:12]}
    if kind == "pack-flip":  # one bit in the frame area
        frames_end = size - FOOTER.size - ENTRY.size * len(entries)
        pos = rng.randrange(8, frames_end)
        flip_bit(pfile, pos, rng.randrange(8))
        what = f"bit flip at {pos} of pack {pid.hex()[:12]}"
    elif kind == "pack-truncate":
        new = rng.randrange(0, size)
        os.truncate(pfile, new)
        what = f"pack {pid.hex()[:12]} truncated to {new}"
    elif kind == "pack-zero4k":
        data = bytearray(pfile.read_bytes())
        blocks = list(range(0, size, 4096))
        rng.shuffle(blocks)
        for off in blocks:
            if any(data[off:off + 4096]):
                data[off:off + 4096] = bytes(len(data[off:off + 4096]))
                break
        pfile.write_bytes(bytes(data))
        what = f"4 KiB at {off} of pack {pid.hex()[:12]} zeroed"
    elif kind == "object-flip":
        oid = rng.choice(sorted([bytes.fromhex(c) for c in base.commits] + list(base.manifests.values())))
        h = oid.hex()
        ofile = d / "objects" / h[:2] / h[2:]
        pos = rng.randrange(ofile.stat().st_size)
        flip_bit(ofile, pos, rng.randrange(8))
        affected = set()
        if not object_intact(ofile, oid):
            affected = {c for c in base.commits if c == h or base.manifests[c] == oid}
        return Damage(f"bit flip at {pos} of object {h[:12]}", {h, h[:12]}, affected,
                      h if h in base.commits and affected else None)
    else:
        raise AssertionError(kind)
    bad = bad_frames(pfile, entries)
    return Damage(what, names | {c.hex() for c in bad}, {c for c, need in base.chunks.items() if need & bad})


def check_damage(kind: str, seed: int, base: RotBase, work: Path) -> Damage:
    case = work / f"{kind}-{seed}"
    shutil.copytree(base.root, case)
    damage = apply_damage(kind, random.Random(seed), case, base)
    with Repo.open(case) as repo:
        report = repo.fsck(read_data=True)
        problems = [str(p) for p in report.problems]
        assert problems, f"{damage.what}: fsck found nothing"
        for p in report.problems:
            # every problem points at the damage (the pack, one of its chunks, the object), never elsewhere
            assert p.id in damage.names or any(n in p.message for n in damage.names) or (
                p.kind == "chunk" and any(bytes.fromhex(p.id) in {e.chunk for e in es}
                                          for pid, es in base.packs.items() if pid.hex() in damage.names)), \
                f"{damage.what}: unexpected problem {p}"
        for cid, msg in base.commits.items():
            dest = work / "co" / f"{kind}-{seed}-{msg}"
            cached = repo.engine.store.index.get_commit(bytes.fromhex(cid)) is not None
            if cid == damage.commit_object and cached:
                assert_checkout_identical(repo, cid, base.srcs[msg], dest)  # the cache's copy is checked by hash
            elif cid in damage.affected:
                assert_failed_checkout_clean(repo, cid, base.srcs[msg], dest, IntegrityError)
            else:
                assert_checkout_identical(repo, cid, base.srcs[msg], dest)
    shutil.rmtree(case)
    return damage


ROT_KINDS = ["pack-flip", "pack-truncate", "pack-zero4k", "object-flip"]


def test_clean_repository_has_no_false_alarms(rot_base: RotBase, tmp_path: Path) -> None:
    case = tmp_path / "clean"
    shutil.copytree(rot_base.root, case)
    with Repo.open(case) as repo:
        report = repo.fsck(read_data=True)
        assert report.ok, [str(p) for p in report.problems]
        assert report.commits == 3 and report.packs == 3
        assert repo.fsck(read_data=True, reindex=True).ok
        for cid, msg in rot_base.commits.items():
            assert_checkout_identical(repo, cid, rot_base.srcs[msg], tmp_path / msg)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", ROT_KINDS)
def test_bit_rot_detected_and_contained(rot_base: RotBase, tmp_path: Path, kind: str, seed: int) -> None:
    check_damage(kind, seed, rot_base, tmp_path)


@soak
@skip_unless_soak
def test_bit_rot_soak(rot_base: RotBase, tmp_path: Path) -> None:
    hits = 0
    for seed in range(500):
        kind = ROT_KINDS[seed % len(ROT_KINDS)]
        hits += bool(check_damage(kind, 10_000 + seed, rot_base, tmp_path).affected)
    assert hits > 300  # most random damage hits chunk or object data; the rest (headers, trailers) must still be reported


def test_deleted_cache_is_rebuilt_not_corruption(rot_base: RotBase, tmp_path: Path) -> None:
    case = tmp_path / "repo"
    shutil.copytree(rot_base.root, case)
    shutil.rmtree(case / ".ckstore" / "cache")
    with Repo.open(case) as repo:  # rebuilt on open
        report = repo.fsck(read_data=True)
        assert report.ok, [str(p) for p in report.problems]
        for cid, msg in rot_base.commits.items():
            assert_checkout_identical(repo, cid, rot_base.srcs[msg], tmp_path / "co")
    with Repo.open(case) as repo:
        shutil.rmtree(case / ".ckstore" / "cache" / "index.lmdb")  # gone under an open repository
    with Repo.open(case) as repo:
        assert repo.fsck(read_data=True, reindex=True).ok
        for cid, msg in rot_base.commits.items():
            assert_checkout_identical(repo, cid, rot_base.srcs[msg], tmp_path / "co")


def test_garbage_cache_is_rebuilt(rot_base: RotBase, tmp_path: Path) -> None:
    case = tmp_path / "repo"
    shutil.copytree(rot_base.root, case)
    (case / ".ckstore" / "cache" / "index.lmdb" / "data.mdb").write_bytes(b"\xff" * 8192)
    with Repo.open(case) as repo:
        assert repo.fsck(read_data=True, reindex=True).ok
        for cid, msg in rot_base.commits.items():
            assert_checkout_identical(repo, cid, rot_base.srcs[msg], tmp_path / "co")


@pytest.mark.parametrize("seed", range(2))
def test_damaged_idx(rot_base: RotBase, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    case = tmp_path / "repo"
    shutil.copytree(rot_base.root, case)
    pid = rng.choice(sorted(rot_base.packs))
    idx = pack_path(case / ".ckstore" / "packs", pid, ".idx")
    flip_bit(idx, rng.randrange(idx.stat().st_size), rng.randrange(8))
    lost = {e.chunk for e in rot_base.packs[pid]}
    affected = {c for c, need in rot_base.chunks.items() if need & lost}
    assert affected
    with Repo.open(case) as repo:
        report = repo.fsck(read_data=True)
        assert any(p.kind == "index" and p.id == pid.hex() for p in report.problems), [str(p) for p in report.problems]
        # the cache still knows the pack: every commit remains readable and verified
        for cid, msg in rot_base.commits.items():
            assert_checkout_identical(repo, cid, rot_base.srcs[msg], tmp_path / "co")
    shutil.rmtree(case / ".ckstore" / "cache")
    with Repo.open(case) as repo:  # the rebuilt cache cannot use the damaged .idx: its chunks are unreachable
        report = repo.fsck(read_data=True, reindex=True)
        assert any(p.kind == "index" and p.id == pid.hex() for p in report.problems), [str(p) for p in report.problems]
        for cid, msg in rot_base.commits.items():
            dest = tmp_path / "co"
            if cid in affected:
                assert_failed_checkout_clean(repo, cid, rot_base.srcs[msg], dest, IntegrityError)
            else:
                assert_checkout_identical(repo, cid, rot_base.srcs[msg], dest)


@pytest.mark.parametrize("content", [b"garbage\n", b"", b"0" * 63 + b"\n", b"zz" * 32 + b"\n"])
def test_corrupt_ref_file_fails_cleanly(rot_base: RotBase, tmp_path: Path, content: bytes) -> None:
    case = tmp_path / "repo"
    shutil.copytree(rot_base.root, case)
    (case / ".ckstore" / "refs" / "heads" / "main").write_bytes(content)
    with Repo.open(case) as repo:
        with pytest.raises(DamagedRef, match="refs/heads/main"):
            repo.checkout("main", tmp_path / "head")
        assert not (tmp_path / "head").exists() or not any((tmp_path / "head").iterdir())
        for cid, msg in rot_base.commits.items():  # objects are intact: every commit by id still checks out
            assert_checkout_identical(repo, cid, rot_base.srcs[msg], tmp_path / "co")


@pytest.mark.parametrize("content", [b"garbage\n", b"", b"0" * 63 + b"\n"])
def test_corrupt_ref_file_reported_by_fsck(rot_base: RotBase, tmp_path: Path, content: bytes) -> None:
    case = tmp_path / "repo"
    shutil.copytree(rot_base.root, case)
    (case / ".ckstore" / "refs" / "heads" / "main").write_bytes(content)
    with Repo.open(case) as repo:
        report = repo.fsck(read_data=True)
        assert any(p.kind == "ref" and "refs/heads/main" in p.id for p in report.problems)


def test_failed_checkout_leaves_no_final_file(rot_base: RotBase, tmp_path: Path) -> None:
    case = tmp_path / "repo"
    shutil.copytree(rot_base.root, case)
    c3 = next(c for c, m in rot_base.commits.items() if m == "c3")
    with Repo.open(case) as repo:
        manifest = repo.manifest(c3)
        last = manifest.files[-1]  # files are written in path order: damage a chunk only the last file uses
        victim = next(t for t in manifest.tensors if t.file == last.path).chunks[0]
        loc = repo.engine.store.index.get(victim)
    flip_bit(pack_path(case / ".ckstore" / "packs", loc.pack), loc.offset + loc.length // 2, 3)
    dest = tmp_path / "dest"
    with Repo.open(case) as repo:
        with pytest.raises(IntegrityError):
            repo.checkout(c3, dest)
    assert leftovers(dest) == []
    assert not dest.exists() or list(dest.rglob("*")) == [], sorted(p.name for p in dest.rglob("*"))


# -- T4: concurrent writers -----------------------------------------------------------------------------------------


def start(*args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], env=worker_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT)


def finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"deadlock? {proc.args[2:4]} did not finish in {timeout}s\n{out}\n{err}")
    assert proc.returncode == 0, f"{proc.args[2:4]} exited {proc.returncode}\n{out}\n{err}"
    return out


def init_shared(tmp_path: Path) -> tuple[Path, Path, str]:
    root, srcroot = tmp_path / "repo", tmp_path / "srcs"
    with Repo.init(root, chunk_size=CHUNK) as repo:
        cid = commit(repo, make_checkpoint(srcroot / "init", 7), "init")
    return root, srcroot, cid


def check_linear_history(repo: Repo, rev: str, expected: set[str], srcroot: Path, work: Path) -> list[str]:
    log = repo.log(rev)
    messages = [c.message for c in log]
    assert len(messages) == len(set(messages)) and set(messages) == expected, \
        f"lost: {sorted(expected - set(messages))}, extra: {sorted(set(messages) - expected)}"
    for child, parent in zip(log, log[1:]):
        assert child.parents == [parent.id], "history is not linear"
    assert log[-1].parents == []
    for c in log:
        assert_checkout_identical(repo, c.id, srcroot / c.message, work / "co")
    return messages[::-1]


def in_order(messages: list[str], prefix: str, count: int) -> None:
    mine = [m for m in messages if m.startswith(prefix)]
    assert mine == [f"{prefix}{i}" for i in range(count)]


def run_two_writers_one_branch(tmp_path: Path, count: int) -> None:
    root, srcroot, _ = init_shared(tmp_path)
    stop = tmp_path / "stop"
    reader = start("reader", root, stop, srcroot)
    writers = [start("writer", root, "main", w, count, srcroot) for w in range(2)]
    try:
        for w in writers:
            finish(w, timeout=60 + 3 * count)
    finally:
        stop.touch()
    out = finish(reader, timeout=60)
    assert int(out.split()[-1]) >= 1, out
    with Repo.open(root) as repo:
        report = repo.fsck(read_data=True)
        assert report.ok, [str(p) for p in report.problems]
        expected = {"init"} | {f"main-w{w}-{i}" for w in range(2) for i in range(count)}
        messages = check_linear_history(repo, "main", expected, srcroot, tmp_path)
        for w in range(2):
            in_order(messages, f"main-w{w}-", count)
        assert len([e for e in repo.audit() if e["ref"] == MAIN]) == 2 * count + 1
    assert lock_files(root) == []


def run_two_branches(tmp_path: Path, count: int) -> None:
    root, srcroot, _ = init_shared(tmp_path)
    with Repo.open(root) as repo:
        repo.branch("a")
        repo.branch("b")
    writers = [start("writer", root, b, 0, count, srcroot) for b in ("a", "b")]
    for w in writers:
        finish(w, timeout=60 + 3 * count)
    with Repo.open(root) as repo:
        report = repo.fsck(read_data=True)
        assert report.ok, [str(p) for p in report.problems]
        for b in ("a", "b"):
            messages = check_linear_history(repo, b, {"init"} | {f"{b}-w0-{i}" for i in range(count)}, srcroot,
                                             tmp_path)
            in_order(messages, f"{b}-w0-", count)
        assert [c.message for c in repo.log("main")] == ["init"]
    assert lock_files(root) == []


def test_two_writers_one_branch_with_reader(tmp_path: Path) -> None:
    run_two_writers_one_branch(tmp_path, 20)


def test_two_writers_two_branches(tmp_path: Path) -> None:
    run_two_branches(tmp_path, 10)


@soak
@skip_unless_soak
def test_two_writers_one_branch_soak(tmp_path: Path) -> None:
    run_two_writers_one_branch(tmp_path, 100)


@soak
@skip_unless_soak
def test_two_writers_two_branches_soak(tmp_path: Path) -> None:
    run_two_branches(tmp_path, 100)


# -- audit log tamper evidence --------------------------------------------------------------------------------------


@pytest.fixture
def audited(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    with Repo.init(root, chunk_size=CHUNK) as repo:
        for i in range(3):
            commit(repo, make_checkpoint(tmp_path / "src" / str(i), 100 + i), f"c{i}")
        repo.branch("side", "HEAD~1")
        repo.tag("v1", message="first release")
        assert len(repo.audit()) == 5
        assert not [p for p in repo.fsck().problems if p.kind == "audit"]
    return root


def audit_problems(root: Path) -> list[str]:
    with Repo.open(root) as repo:
        return [str(p) for p in repo.fsck().problems if p.kind == "audit"]


def _edit_message(lines: list[str]) -> list[str]:
    entry = json.loads(lines[1])
    entry["message"] = "nothing to see here"
    return [lines[0], json.dumps(entry, sort_keys=True, separators=(",", ":")), *lines[2:]]


def _edit_and_rehash(lines: list[str]) -> list[str]:
    from ckstore.storage.audit import entry_hash
    entry = json.loads(lines[1])
    entry.pop("hash")
    entry["new"] = "ab" * 32
    entry["hash"] = entry_hash(entry)
    return [lines[0], json.dumps(entry, sort_keys=True, separators=(",", ":")), *lines[2:]]


TAMPER = {
    "edit-field": _edit_message,
    "edit-and-rehash": _edit_and_rehash,  # an attacker recomputes the entry's own hash: the next link breaks
    "edit-byte": lambda ls: [ls[0], ls[1].replace('"seq":2', '"seq":9'), *ls[2:]],
    "break-json": lambda ls: [ls[0], ls[1][:-5], *ls[2:]],
    "delete-middle": lambda ls: ls[:2] + ls[3:],
    "delete-first": lambda ls: ls[1:],
    "swap": lambda ls: [ls[0], ls[2], ls[1], *ls[3:]],
}


@pytest.mark.parametrize("how", sorted(TAMPER))
def test_audit_tamper_detected(audited: Path, how: str) -> None:
    log = audited / ".ckstore" / "logs" / "audit"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(TAMPER[how](lines)) + "\n")
    assert audit_problems(audited)


def test_audit_truncated_mid_entry_detected(audited: Path) -> None:
    log = audited / ".ckstore" / "logs" / "audit"
    os.truncate(log, log.stat().st_size - 10)
    assert audit_problems(audited)


def test_audit_untouched_is_clean(audited: Path) -> None:
    assert audit_problems(audited) == []


@pytest.mark.parametrize("how", ["delete-last", "truncate-at-line", "truncate-empty", "delete-file"])
def test_audit_tail_removal_detected(audited: Path, how: str) -> None:
    log = audited / ".ckstore" / "logs" / "audit"
    lines = log.read_text().splitlines(keepends=True)
    if how == "delete-last":
        log.write_text("".join(lines[:-1]))
    elif how == "truncate-at-line":
        log.write_text("".join(lines[:2]))
    elif how == "truncate-empty":
        log.write_text("")
    else:
        log.unlink()
    assert audit_problems(audited)


# -- T10: hostile manifest paths ------------------------------------------------------------------------------------


@pytest.fixture
def evil(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.bin").write_bytes(b"fine\n")
    repo = Repo.init(tmp_path / "repo")
    commit(repo, src, "good")
    yield repo
    repo.close()


def plant(repo: Repo, paths: list[str]) -> str:
    """Move main to a commit whose manifest names `paths` (each a small, correctly hashed inline file)."""
    recipes = []
    for i, p in enumerate(paths):
        data = f"evil {i}\n".encode()
        recipes.append(FileRecipe(p, len(data), hash_bytes(data), (Inline(data),)))
    mid = repo.engine.store.put_object(Manifest(tuple(recipes), ()))
    head = repo.engine.refs.read(MAIN)
    cid = repo.engine.store.put_object(Commit(mid, (head,), "mallory", time.time(), "evil"))
    repo.engine.refs.update(MAIN, cid, head, action="commit", message="evil")
    return cid.hex()


def snapshot(root: Path, skip: Path) -> dict[str, bytes | None]:
    out = {}
    for p in root.rglob("*"):
        if p == skip or skip in p.parents or "repo" in p.relative_to(root).parts[:1]:
            continue
        out[p.relative_to(root).as_posix()] = None if p.is_dir() else p.read_bytes()
    return out


EVIL_PATHS = {
    "dotdot": ["../x"],
    "dotdot-deep": ["../../outside/x"],
    "absolute": ["/etc/ckstore-evil-x"],
    "absolute-outside": ["@OUTSIDE@/x"],
    "inner-dotdot": ["a/../../b"],
    "drive-backslash": ["C:\\x"],
    "drive-relative": ["C:x"],
    "backslash": ["a\\..\\..\\x"],
    "ckstore": [".ckstore/config"],
    "ckstore-nested": ["sub/.ckstore/config"],
    "ckstore-case": [".CKStore/config"],
    "git": [".git/config"],
    "git-case": ["x/.GIT/hooks/pre-commit"],
    "nul": ["a\x00b"],
    "empty": [""],
    "dot": ["./a"],
    "empty-component": ["a//b"],
    "trailing-slash": ["a/"],
    "long-name": ["x" * 5000],
    "long-path": ["d/" * 2100 + "x"],
    "casefold-twins": ["A", "a"],
    "casefold-nested": ["Dir/f", "dir/F"],
    "file-and-dir": ["a", "a/b"],
}


@pytest.mark.parametrize("case", sorted(EVIL_PATHS))
def test_hostile_manifest_paths_refused(evil: Repo, tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    paths = [p.replace("@OUTSIDE@", str(outside)) for p in EVIL_PATHS[case]]
    etc_before = os.path.exists("/etc/ckstore-evil-x")
    cid = plant(evil, paths)
    dest = tmp_path / "box" / "dest"
    dest.parent.mkdir()
    before = snapshot(tmp_path, dest)
    with pytest.raises(UnsafePath):
        evil.checkout(cid, dest)
    assert snapshot(tmp_path, dest) == before
    assert list(outside.iterdir()) == []
    assert os.path.exists("/etc/ckstore-evil-x") == etc_before
    # paths are validated before anything is written
    assert not dest.exists() or list(dest.rglob("*")) == []


@pytest.mark.parametrize("layout", ["sub", "nested", "dest-itself"])
def test_symlinked_parent_refused(evil: Repo, tmp_path: Path, layout: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    if layout == "dest-itself":
        dest.symlink_to(outside, target_is_directory=True)
        path = "x"
    elif layout == "sub":
        dest.mkdir()
        (dest / "sub").symlink_to(outside, target_is_directory=True)
        path = "sub/x"
    else:
        (dest / "real").mkdir(parents=True)
        (dest / "real" / "sub").symlink_to(outside, target_is_directory=True)
        path = "real/sub/deeper/x"
    cid = plant(evil, [path])
    with pytest.raises(UnsafePath):
        evil.checkout(cid, dest, force=True)
    assert list(outside.iterdir()) == []


def test_symlink_at_final_name_is_replaced_not_followed(evil: Repo, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "x").symlink_to(outside / "x")  # dangling link to a file outside
    (dest / "y").symlink_to(outside, target_is_directory=True)
    cid = plant(evil, ["x", "y"])
    try:
        evil.checkout(cid, dest, force=True)
    except CkstoreError:
        pass
    else:
        assert not (dest / "x").is_symlink() and (dest / "x").read_bytes() == b"evil 0\n"
    assert list(outside.iterdir()) == []


def test_long_but_legal_file_name_round_trips(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    name = "n" * 240 + ".bin"  # 244 bytes: legal on every common Linux filesystem
    (src / name).write_bytes(b"payload\n" * 10)
    with Repo.init(tmp_path / "repo") as repo:
        cid = commit(repo, src, "long")
        assert_checkout_identical(repo, cid, src, tmp_path / "dest")


def test_overlong_component_is_a_clean_error(evil: Repo, tmp_path: Path) -> None:
    """A 1000-byte component is under the 4096-byte path limit but over NAME_MAX: a CkstoreError, no stray file."""
    cid = plant(evil, ["z" * 1000])
    dest = tmp_path / "dest"
    with pytest.raises(UnsafePath, match="longer than 255 bytes"):
        evil.checkout(cid, dest)
    assert leftovers(dest) == []
