"""fsck --repair: rebuild the caches, move damaged packs and objects to quarantine/ (after copying out every frame
that still verifies), re-fetch what is then missing from a remote, and say what could not be recovered.

Nothing is deleted: a quarantined file keeps its name under `.ckstore/quarantine/`, so a repair can be undone by
hand, and nothing unverified enters the store (salvaged frames are decoded and hashed, fetched ones are checked
as every fetch checks them)."""

from __future__ import annotations

import os
import time
from typing import Callable

from ..errors import CkstoreError
from ..model.objects import AliasMove, Commit, Manifest, Tag, hash_bytes
from ..model.progress import Progress
from ..results import RepairResult
from ..storage.config import Config
from ..fs.fileio import write_atomic
from ..storage.packs import PackFormatError, idx_bytes, pack_path, parse_idx, read_pack_entries
from ..storage.store import PackSink
from .fsck import check, frame_ok
from .repository import Repository

# Fetches (chunk ids, object ids) from a remote into the store, verified; returns how many of each arrived.
Refetch = Callable[[list[bytes], list[bytes]], tuple[int, int]]


def repair(repo: Repository, progress: Progress, refetch: Refetch | None = None) -> RepairResult:
    """Repair `repo` as the module docstring says; `refetch` brings missing data from a remote when given."""
    with repo.writing("repair"):
        return _repair(repo, progress, refetch)


def _repair(repo: Repository, progress: Progress, refetch: Refetch | None) -> RepairResult:
    before = check(repo, read_data=True, progress=progress)
    result = RepairResult(before, before)
    for pack_id in repo.store.packs_without_idx():
        _restore_idx(repo, pack_id)
    quarantine = repo.dir / "quarantine"
    sink = repo.store.sink(repo.config.pack_size)
    try:
        for pack_id in map(bytes.fromhex, before.damaged_packs):
            result.salvaged_chunks += _salvage(repo, pack_id, sink)
            for suffix in (".pack", ".idx"):
                result.quarantined += _move(pack_path(repo.store.packs_dir, pack_id, suffix), quarantine / "packs")
        sink.finish()
    except BaseException:
        sink.abort()
        raise
    for oid in list(repo.store.object_ids()):
        try:
            repo.store.get_object(oid)
        except CkstoreError:
            result.quarantined += _move(repo.store.object_path(oid), quarantine / "objects")
    repo.store.reindex()  # the caches are rebuilt from what is left, and the salvaged pack
    if any(p.kind == "config" for p in before.problems):
        config = Config.load(repo.dir / "config")
        config.save(repo.dir / "config", repo.store.tmp_dir)  # the values as they are, with a fresh checksum
    chunks, objects = _missing(repo)
    if refetch is not None and (chunks or objects):
        result.fetched_chunks, result.fetched_objects = refetch(chunks, objects)
        chunks, objects = _missing(repo)
    result.missing_chunks, result.missing_objects = len(chunks), len(objects)
    result.after = check(repo, read_data=True, progress=progress)
    return result


def _restore_idx(repo: Repository, pack_id: bytes) -> None:
    """Write the .idx of a pack that lost it, from the pack's own trailer, if the pack hashes to its name."""
    try:
        data = pack_path(repo.store.packs_dir, pack_id).read_bytes()
        if hash_bytes(data) != pack_id:
            return  # not sound: its frames are salvaged with the damaged packs below, if it gets an .idx back
        entries = read_pack_entries(data)
    except (OSError, PackFormatError):
        return
    write_atomic(pack_path(repo.store.packs_dir, pack_id, ".idx"), idx_bytes(pack_id, entries), repo.store.tmp_dir,
                 exclusive=True)


def _salvage(repo: Repository, pack_id: bytes, sink: PackSink) -> int:
    """Copy every frame of a damaged pack that still decodes to its id into `sink` (found through the pack's
    trailer, else its .idx); how many were saved."""
    try:
        data = pack_path(repo.store.packs_dir, pack_id).read_bytes()
    except OSError:
        return 0
    try:
        entries = read_pack_entries(data)
    except PackFormatError:
        try:
            pid, entries = parse_idx(pack_path(repo.store.packs_dir, pack_id, ".idx").read_bytes())
        except (OSError, PackFormatError):
            return 0
        if pid != pack_id:
            return 0
    saved = 0
    for e in entries:
        # the chunk is still indexed in the damaged pack, so it is written again, into the new one
        if frame_ok(repo, data, e)[0] and sink.add(e.chunk, data[e.offset:e.offset + e.length], e.raw_length,
                                                   again=True):
            saved += 1
    return saved


def _move(path: os.PathLike, into: os.PathLike) -> list[str]:
    """Move a file into quarantine (never over an earlier one); the new path, or nothing if it was gone."""
    os.makedirs(into, exist_ok=True)
    target = os.path.join(into, os.path.basename(path))
    if os.path.exists(target):
        target += f".{int(time.time())}"
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return []
    return [target]


def _missing(repo: Repository) -> tuple[list[bytes], list[bytes]]:
    """(chunks, objects) that the commits every ref reaches need and the store does not hold."""
    chunks: set[bytes] = set()
    objects: set[bytes] = set()
    stack = []
    for oid in repo.refs.list(errors=[]).values():
        stack.append(oid)
    seen: set[bytes] = set()
    while stack:
        oid = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        try:
            obj = repo.store.get_object(oid)
        except CkstoreError:
            objects.add(oid)
            continue
        if isinstance(obj, Tag):
            stack.append(obj.target)
        elif isinstance(obj, AliasMove):  # every holder an alias had is needed (rollback)
            stack.extend(x for x in (obj.target, obj.previous) if x is not None)
        elif isinstance(obj, Commit):
            stack.extend(repo.past_dropped(obj.parents))  # commits retention dropped are not missing
            stack.append(obj.manifest)
        elif isinstance(obj, Manifest):
            needed = list(obj.chunk_ids())
            have = repo.store.index.get_many(needed)
            chunks.update(c for c in needed if c not in have)
    return sorted(chunks), sorted(objects)
