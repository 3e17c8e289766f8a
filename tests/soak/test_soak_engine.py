"""Soak tier of the local-repository cases of RELIABILITY.md: T1 (commit crash sweep, SIGKILL), T3 (bit rot),
T4 (concurrent writers, fsck throughout), T15 (destination races). Each reuses the CI-tier helpers and records its
count and failures (bench/soak.py reads them)."""

from __future__ import annotations

import random
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from soakutil import Tally, n, skip_unless_soak, soak

from ckstore import Repo
from ckstore.errors import CkstoreError, DamagedRef, IntegrityError
from ckstore.storage.packs import pack_path

import test_reliability as rel
from test_reliability import crash_base, rot_base  # noqa: F401  (module fixtures)
import test_restore_safety as rs
from test_restore_safety import many  # noqa: F401
from test_fsck_repair import ck as fsck_ck

pytestmark = [soak, skip_unless_soak]


# -- T1 ---------------------------------------------------------------------------------------------------------------

def test_t1_crash_sweep_commit(crash_base, tmp_path: Path, record_property) -> None:  # noqa: F811
    """os._exit at every durable I/O step of a commit (CKSTORE_CRASH_AT=N), then N = steps + 1 completes."""
    base, tally = crash_base, Tally(record_property, "every crash point")
    histories: dict[int, list[str]] = {}

    def one(n: int) -> None:
        case = tmp_path / f"n{n}"
        shutil.copytree(base.root / "repo", case)
        p = rel.run_worker("commit", case, base.srcs["new"], "new", CKSTORE_CRASH_AT=str(n))
        if n > base.steps:
            assert p.returncode == 0, f"step {n}: the commit should have completed\n{p.stderr}"
            return
        assert p.returncode == 137, f"step {n}: rc {p.returncode}\n{p.stderr[-2000:]}"
        histories[n] = rel.check_after_crash(case, base, tmp_path / f"co{n}")
        shutil.rmtree(case)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda n: tally.case(f"CKSTORE_CRASH_AT={n}", one, n), range(1, base.steps + 2)))
    visible = [len(histories[n]) == 2 for n in sorted(histories)]

    def monotone() -> None:
        assert visible == sorted(visible) and not visible[0] and visible[-1], visible
    tally.case("all-or-nothing order", monotone)
    tally.notes["io_steps"] = base.steps
    tally.finish()


def test_t1_sigkill_commit(crash_base, tmp_path: Path, record_property) -> None:  # noqa: F811
    tally, rng, seen = Tally(record_property, 200), random.Random(98765), []
    for i in range(n(200)):
        h = tally.case(f"kill {i} (Random(98765))", rel.sigkill_round, crash_base, tmp_path / f"k{i}",
                       tmp_path / f"co{i}", rng)
        if h is not None:
            seen.append(len(h))
    tally.notes["killed_before_ref_move"] = seen.count(1)
    tally.notes["killed_after_ref_move"] = seen.count(2)
    tally.finish()


# -- T3 ---------------------------------------------------------------------------------------------------------------

def verify(case: Path, damage: rel.Damage, base: rel.RotBase, work: Path) -> None:
    """check_damage's oracle for damage made here: fsck names it; affected commits fail cleanly, the rest check out."""
    with Repo.open(case) as repo:
        report = repo.fsck(read_data=True)
        assert report.problems, f"{damage.what}: fsck found nothing"
        named = [p for p in report.problems if p.id in damage.names or any(n in p.message for n in damage.names)]
        assert named, f"{damage.what}: no problem names the damage: {[str(p) for p in report.problems]}"
        for cid, msg in base.commits.items():
            dest = work / "co" / f"{case.name}-{msg}"
            if cid in damage.affected:
                rel.assert_failed_checkout_clean(repo, cid, base.srcs[msg], dest, IntegrityError)
            else:
                rel.assert_checkout_identical(repo, cid, base.srcs[msg], dest)
    shutil.rmtree(case)


def swap_packs(seed: int, base: rel.RotBase, work: Path) -> None:
    rng = random.Random(seed)
    case = work / f"swap-{seed}"
    shutil.copytree(base.root, case)
    a, b = rng.sample(sorted(base.packs), 2)
    pa, pb = pack_path(case / ".ckstore" / "packs", a), pack_path(case / ".ckstore" / "packs", b)
    da, db = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(db)
    pb.write_bytes(da)
    lost = {e.chunk for e in base.packs[a] + base.packs[b]}
    affected = {c for c, need in base.chunks.items() if need & lost}
    verify(case, rel.Damage(f"packs {a.hex()[:12]} and {b.hex()[:12]} swapped", {a.hex(), b.hex(), a.hex()[:12],
                                                                               b.hex()[:12]}, affected), base, work)


def damaged_ref(seed: int, base: rel.RotBase, work: Path) -> None:
    rng = random.Random(seed)
    case = work / f"ref-{seed}"
    shutil.copytree(base.root, case)
    ref = case / ".ckstore" / "refs" / "heads" / "main"
    data = bytearray(ref.read_bytes())
    how = rng.choice(["flip", "truncate", "zero"])
    if how == "flip":
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif how == "truncate":
        del data[rng.randrange(len(data)):]
    else:
        data = bytearray(len(data))
    ref.write_bytes(bytes(data))
    head_id = next(c for c, m in base.commits.items() if m == "c3")
    with Repo.open(case) as repo:
        try:
            head = repo.engine.refs.read(rel.MAIN)
        except DamagedRef:
            head = None
        if head is None or head.hex() != head_id:  # (a flip of the trailing newline can leave the same id)
            problems = repo.fsck(read_data=True).problems
            assert any("refs/heads/main" in p.id or "refs/heads/main" in p.message for p in problems), \
                f"{how}: not reported: {[str(p) for p in problems]}"
            with pytest.raises(CkstoreError):
                repo.checkout("main", work / f"head-{seed}")
        for cid, msg in base.commits.items():
            rel.assert_checkout_identical(repo, cid, base.srcs[msg], work / f"co-{seed}")
    shutil.rmtree(case)


def clean_copy(seed: int, base: rel.RotBase, work: Path) -> None:
    case = work / f"clean-{seed}"
    shutil.copytree(base.root, case)
    with Repo.open(case) as repo:
        report = repo.fsck(read_data=True)
        assert report.ok, [str(p) for p in report.problems]
    shutil.rmtree(case)


def test_t3_bit_rot(rot_base, tmp_path: Path, record_property) -> None:  # noqa: F811
    """Packs (flip / truncate / zero 4 KiB), objects (flip), swapped packs, damaged refs; LMDB is T13."""
    tally, hits = Tally(record_property, 500), 0
    for seed in range(n(500)):
        kind = rel.ROT_KINDS[seed % len(rel.ROT_KINDS)]
        d = tally.case(f"{kind} seed {10_000 + seed}", rel.check_damage, kind, 10_000 + seed, rot_base, tmp_path)
        hits += bool(d is not None and d.affected)
    for seed in range(n(25)):
        tally.case(f"pack-swap seed {seed}", swap_packs, seed, rot_base, tmp_path)
        tally.case(f"ref seed {seed}", damaged_ref, seed, rot_base, tmp_path)
    tally.notes["damage_that_hit_commit_data"] = hits
    tally.finish()


def test_t3_no_false_alarms(rot_base, tmp_path: Path, record_property) -> None:  # noqa: F811
    tally = Tally(record_property, "0 false alarms")
    for seed in range(n(50)):
        tally.case(f"clean copy {seed}", clean_copy, seed, rot_base, tmp_path)
    tally.finish()


# -- T4 ---------------------------------------------------------------------------------------------------------------

class FsckLoop(threading.Thread):
    """`ckstore fsck` in a loop, in its own process each time, for as long as the writers run."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.stop, self.runs, self.bad = root, threading.Event(), 0, []

    def run(self) -> None:
        while not self.stop.is_set():
            if not (self.root / ".ckstore" / "config").exists():
                self.stop.wait(0.05)
                continue
            r = fsck_ck(self.root, "fsck")
            self.runs += 1
            if r.returncode != 0:
                self.bad.append(r.stderr[-500:])


def writers_run(run, tmp_path: Path, count: int, loop: FsckLoop) -> None:
    loop.start()
    try:
        run(tmp_path, count)
    finally:
        loop.stop.set()
        loop.join(600)
    assert loop.runs >= 1 and loop.bad == [], f"fsck under the writers: {loop.bad[:3]}"


@pytest.mark.parametrize("layout", ["one-branch+reader", "two-branches"])
def test_t4_concurrent_writers_fsck_throughout(tmp_path: Path, record_property, layout: str) -> None:
    run = rel.run_two_writers_one_branch if layout == "one-branch+reader" else rel.run_two_branches
    tally, fscks = Tally(record_property, 10), 0
    for i in range(n(10)):
        loop = FsckLoop(tmp_path / f"run{i}" / "repo")
        (tmp_path / f"run{i}").mkdir()
        tally.case(f"run {i}", writers_run, run, tmp_path / f"run{i}", n(100), loop)
        fscks += loop.runs
        shutil.rmtree(tmp_path / f"run{i}", ignore_errors=True)
    tally.notes["commits_per_writer"] = n(100)
    tally.notes["fsck_runs_during_writes"] = fscks
    tally.finish()


# -- T15 --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["exchange", "rename"])
def test_t15_destination_races(many, tmp_path: Path, record_property, kind: str) -> None:  # noqa: F811
    tally, swaps = Tally(record_property, 200), 0
    for r in range(n(200)):
        work = tmp_path / f"r{r}"
        work.mkdir()
        t = tally.case(f"{kind} round {r}", rs.race_rounds, many, work, kind, 1)
        swaps += t["swaps"] if t else 0
        shutil.rmtree(work, ignore_errors=True)
    tally.notes["swaps"] = swaps
    tally.finish()
