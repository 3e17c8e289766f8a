"""Garbage collection: mark from the roots, sweep in two phases, never under a running writer.

  1. Under `locks/gc` (one gc at a time), mark what the roots keep (engine.reach) while writers keep working.
  2. Take the sweep lock (`storage.leases`): new writers wait, running ones are waited for. Re-read the roots
     right before anything moves (a commit may have landed since the mark) and mark what is new.
  3. Phase one: unreferenced packs and objects older than the grace period go to a tombstone set. A commit that
     dedups against a tombstoned chunk revives its pack, so the chunk is never deleted under it.
  4. Phase two: tombstone sets older than the grace period are deleted, after checking once more that nothing in
     them is referenced (what is, is moved back).
Each move is one rename, each set deleted whole: killed at any moment, the repository opens and checks clean, and
the next gc finishes a pack move a crash cut in half. `--now` (no grace) is refused while any writer's lease lives.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import LockTimeout, UsageError
from ..fs.locks import LOCK_WAIT
from ..model.progress import NoProgress, Progress
from ..results import GcResult
from ..storage.packs import Entry, PackFormatError, pack_path, parse_idx
from ..storage.remotes import partial_remote
from .reach import Reach, mark, roots
from .repository import Repository

DEFAULT_GRACE = 3600.0

# repack(repo, reach, candidates, result) -> pack ids it rewrote (their live frames are now in new packs)
Repacker = Callable[[Repository, Reach, list[dict], GcResult], list[bytes]]


@dataclass
class Plan:
    """What a sweep would move: whole-garbage packs and objects, and packs that are partly garbage."""

    packs: dict[bytes, int] = field(default_factory=dict)    # pack id -> bytes (.pack + .idx)
    objects: dict[bytes, int] = field(default_factory=dict)  # object id -> bytes
    partly: list[dict] = field(default_factory=list)         # {pack, size, unused}
    kept: int = 0
    young: int = 0


def gc(repo: Repository, *, grace: float = DEFAULT_GRACE, now: bool = False, dry_run: bool = False,
       wait: float = LOCK_WAIT, repack: Repacker | None = None, progress: Progress | None = None,
       clock: Callable[[], float] = time.time) -> GcResult:
    """Collect garbage as the module docstring says. `now`: no grace period for young data or tombstones.
    `repack`: rewrite partly-garbage packs under the same sweep lock (engine.repack)."""
    progress = progress or NoProgress()
    if grace < 0:
        raise UsageError("--grace must not be negative")
    partial = partial_remote(repo.dir)
    if partial is not None:
        raise UsageError(f"this is a partial clone of {partial.name}: chunks it has not fetched live only there, and "
                         "gc cannot tell what the rest of its history needs",
                         hint="fetch everything first (`ckstore fetch --all`), or gc the remote itself")
    effective = 0.0 if now else grace
    result = GcResult(dry_run=dry_run, grace=effective, disk_before=disk_bytes(repo))
    with repo.leases.gc():
        if now and not dry_run and repo.leases.live():
            owners = "; ".join(lease.owner for lease in repo.leases.live()[:3])
            raise LockTimeout(f"gc --now refused: a writer holds a lease ({owners})",
                              hint="--now skips the grace period, so it runs only when nothing else writes")
        started = clock()
        progress.begin("gc: marking", 0)
        try:
            reach = mark(repo, roots(repo, grace=effective, now=started))
        finally:
            progress.end()
        if dry_run:
            _fill(result, reach, _plan(repo, reach, effective, started))
            result.tombstoned_bytes = sum(repo.store.tombstones.size(n) for n, _ in repo.store.tombstones.sets())
            return result
        with repo.leases.sweep(wait):
            repo.store.tombstones.finish_interrupted()
            fresh = {k: v for k, v in roots(repo, grace=effective, now=clock()).items() if k not in reach.objects}
            if fresh:
                mark(repo, fresh, into=reach)
            repo.store.sync_index()
            plan = _plan(repo, reach, effective, started)
            if repack is not None:  # also with no partly-garbage pack: dropped bases and inversion need it
                rewritten = repack(repo, reach, plan.partly, result)
                result.repacked = len(rewritten)
                plan = _plan(repo, reach, effective, started, also=set(rewritten))
            _fill(result, reach, plan)
            _sweep(repo, plan, result, started, progress)
            _purge(repo, reach, result, effective, clock(), progress)
        result.tombstoned_bytes = sum(repo.store.tombstones.size(n) for n, _ in repo.store.tombstones.sets())
    result.disk_after = disk_bytes(repo)
    return result


def disk_bytes(repo: Repository) -> int:
    """Bytes of packs/, objects/ and tombstones/: what the store takes on disk (net of a repack's rewrites)."""
    total = 0
    for sub in (repo.store.packs_dir, repo.store.objects_dir, repo.store.tombstones.dir):
        for dirpath, _, names in os.walk(sub):
            for n in names:
                try:
                    total += os.stat(os.path.join(dirpath, n)).st_size
                except FileNotFoundError:
                    continue
    return total


def _fill(result: GcResult, reach: Reach, plan: Plan) -> None:
    result.live_commits, result.live_chunks = len(reach.commits), len(reach.live_chunks)
    result.packs_kept, result.young_skipped = plan.kept, plan.young
    result.packs_swept, result.objects_swept = len(plan.packs), len(plan.objects)
    result.bytes_swept = sum(plan.packs.values()) + sum(plan.objects.values())
    result.partly_garbage = plan.partly


def pack_entries(repo: Repository) -> dict[bytes, list[Entry]]:
    """Every pack in packs/ with its .idx entries (the truth, not the cache); a pack with an unreadable .idx is
    left out (fsck reports it; gc keeps it)."""
    out = {}
    for pack_id in repo.store.pack_ids():
        try:
            pid, entries = parse_idx(pack_path(repo.store.packs_dir, pack_id, ".idx").read_bytes())
        except (OSError, PackFormatError):
            continue
        if pid == pack_id and pack_path(repo.store.packs_dir, pack_id).is_file():
            out[pack_id] = entries
    return out


def _size(path: os.PathLike) -> tuple[int, float]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return 0, 0.0
    return st.st_size, st.st_mtime


def _plan(repo: Repository, reach: Reach, grace: float, now: float, also: set[bytes] = frozenset()) -> Plan:
    """Whole-garbage packs and objects older than `grace` (plus the packs in `also`, which repack emptied)."""
    plan = Plan()
    live = reach.live_chunks
    for pack_id, entries in pack_entries(repo).items():
        size, mtime = _size(pack_path(repo.store.packs_dir, pack_id))
        idx_size, _ = _size(pack_path(repo.store.packs_dir, pack_id, ".idx"))
        used = sum(e.length for e in entries if e.chunk in live)
        if pack_id in also or not any(e.chunk in live for e in entries):
            if pack_id in also or mtime <= now - grace:
                plan.packs[pack_id] = size + idx_size
            else:
                plan.young += 1
            continue
        plan.kept += 1
        unused = sum(e.length for e in entries) - used
        if unused:
            plan.partly.append({"pack": pack_id.hex(), "size": size, "unused": unused})
    for oid in repo.store.object_ids():
        if oid in reach.objects:
            continue
        size, mtime = _size(repo.store.object_path(oid))
        if mtime <= now - grace:
            plan.objects[oid] = size
        else:
            plan.young += 1
    return plan


def _sweep(repo: Repository, plan: Plan, result: GcResult, now: float, progress: Progress) -> None:
    """Phase one: move the plan's packs and objects into a new tombstone set."""
    if not plan.packs and not plan.objects:
        return
    stones = repo.store.tombstones
    name = stones.new_set(now)
    progress.begin("gc: sweeping", sum(plan.packs.values()) + sum(plan.objects.values()))
    try:
        repo.store.index.drop_packs(set(plan.packs))  # first: no reader is sent to a pack that is moving away
        # Newest first: a pack's frames have their bases in older packs, so the packs a crash leaves behind
        # (indexed again on open) always decode, even when repack has turned their chains around meanwhile.
        newest = sorted(plan.packs.items(), key=lambda kv: -_size(pack_path(repo.store.packs_dir, kv[0]))[1])
        for pack_id, size in newest:
            stones.move_pack(pack_id, name)
            progress.advance(size)
        for oid, size in plan.objects.items():
            stones.move_object(oid, repo.store.object_path(oid), name)
            progress.advance(size)
        stones.sync(name)
    finally:
        progress.end()


def _purge(repo: Repository, reach: Reach, result: GcResult, grace: float, now: float, progress: Progress) -> None:
    """Phase two: delete tombstone sets past their grace; anything in them referenced again is moved back."""
    stones = repo.store.tombstones
    live = reach.live_chunks
    due = stones.sets()
    progress.begin("gc: freeing", sum(stones.size(n) for n, made in due if made <= now - grace))
    try:
        _purge_sets(repo, reach, result, due, grace, now, progress, live)
    finally:
        progress.end()


def _purge_sets(repo: Repository, reach: Reach, result: GcResult, due: list[tuple[str, float]], grace: float,
                now: float, progress: Progress, live: set[bytes]) -> None:
    stones = repo.store.tombstones
    for name, made in due:
        packs, objects = stones.contents(name)
        for pack_id, entries in packs.items():
            needed = [e.chunk for e in entries if e.chunk in live]
            if needed and not all(repo.store.has_chunk(c) for c in needed):
                back = stones.revive_pack(name, pack_id)
                if back is not None:
                    repo.store.index.add_packs([(pack_id, back)])
                    result.revived += 1
        for oid in objects:
            if oid in reach.objects and not repo.store.has_object(oid):
                result.revived += stones.revive_object(oid, repo.store.object_path(oid))
        if made <= now - grace:
            size = stones.size(name)
            stones.delete(name)
            result.sets_deleted += 1
            result.bytes_freed += size
            progress.advance(size)
