"""What a repository must keep: the roots (refs, recent ref values from the audit log) and everything they reach.

One mark serves gc, `forget --dry-run`'s "bytes gc would free", `du` and repack. A kept commit keeps its object,
its manifest and every chunk the manifest names, and every chunk those chunks' delta frames are based on (a base
no manifest names is counted apart: repack re-encodes its dependants so it can go). Commits retention dropped are
passed through (their records keep their parents) but keep nothing themselves. Archived commits keep their
commit and manifest objects; their chunks live on the cold remote their record names. An alias keeps every commit
it ever named (rollback needs them); notes keep their own objects but not the commits they annotate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable

from ..errors import CkstoreError, DamagedRef, MissingObject, UsageError
from ..model import codec
from ..model.objects import AliasMove, Commit, Manifest, Note, Tag
from ..storage.config import MAX_DELTA_DEPTH
from ..storage.records import Dropped
from .repository import Repository


@dataclass
class Reach:
    """The result of a mark: what the roots keep alive."""

    roots: dict[bytes, str] = field(default_factory=dict)  # root id -> why (a ref name, or an audit entry)
    commits: set[bytes] = field(default_factory=set)        # kept commits
    objects: set[bytes] = field(default_factory=set)        # commit, manifest and tag objects to keep
    chunks: set[bytes] = field(default_factory=set)         # chunks kept manifests name
    bases: set[bytes] = field(default_factory=set)          # chunks kept only as delta bases of others
    base_of: dict[bytes, bytes] = field(default_factory=dict)  # kept chunk -> the base its frame names
    missing: set[bytes] = field(default_factory=set)        # chunks named but not stored (partial clones)
    archived: set[bytes] = field(default_factory=set)       # kept commits whose chunks live on a cold remote
    chunked: set[bytes] = field(default_factory=set)        # manifests whose chunks are marked

    @property
    def live_chunks(self) -> set[bytes]:
        """Every chunk whose frame must stay stored."""
        return self.chunks | self.bases


def roots(repo: Repository, *, grace: float, now: float | None = None) -> dict[bytes, str]:
    """Every id gc must keep, with why: each ref, and each value a ref held within the last `grace` seconds (the
    audit log records them: a `reset --force` or a deleted branch can be undone for that long). A damaged ref is
    an error: what it reaches is unknown, so nothing may be swept."""
    errors: list[tuple[str, str]] = []
    out: dict[bytes, str] = {}
    for name, oid in repo.refs.list(errors=errors).items():
        out.setdefault(oid, name)
    if errors:
        name, why = errors[0]
        raise DamagedRef(name, why.removeprefix(f"damaged {name}: "), hint="run `ckstore fsck`; gc sweeps nothing while a ref is damaged")
    since = (time.time() if now is None else now) - grace
    for entry in repo.refs.audit.entries():
        if entry.time >= since:
            for value in (entry.old, entry.new):
                if value and len(value) == 64:
                    oid = bytes.fromhex(value)
                    if oid not in repo.dropped:
                        out.setdefault(oid, f"audit log entry {entry.seq} ({entry.action} {entry.ref})")
    return out


def mark(repo: Repository, start: dict[bytes, str], *, into: Reach | None = None,
         dropping: dict[bytes, Dropped] | None = None) -> Reach:
    """Everything the roots in `start` keep, added to `into` (a mark made earlier: a re-mark after the roots
    moved only walks what is new). `dropping`: records of commits to treat as dropped too (what a policy would
    free). A root or a kept commit whose object is missing or damaged raises: nothing is swept on a guess."""
    reach = into or Reach()
    reach.roots.update(start)
    stack = [oid for oid in start if oid not in reach.objects]
    tips = set(start)
    seen: set[bytes] = set()
    passed: set[bytes] = set()
    new_manifests: list[Manifest] = []
    while stack:
        oid = stack.pop()
        if oid in seen or oid in reach.objects:
            continue
        rec = (dropping or {}).get(oid) or repo.dropped.get(oid)
        if rec is not None and oid not in tips:
            if oid in passed:
                continue
            passed.add(oid)  # passed through, not seen: a later alias or tag may still name it and keep it
            stack.extend(p for p in rec.parents)  # dropped: keeps nothing, but the history behind it goes on
            continue
        seen.add(oid)
        try:
            obj = repo.store.get_commit_or_object(oid)
        except MissingObject:
            if oid not in tips and rec is not None:
                continue
            raise MissingObject("object", oid.hex(), hint=f"it is reached from {_why(reach, oid)}; run `ckstore "
                                "fsck` (gc sweeps nothing while history is incomplete)") from None
        reach.objects.add(oid)
        if isinstance(obj, Tag):
            stack.append(obj.target)
            tips.add(obj.target)
        elif isinstance(obj, AliasMove):  # every holder an alias had stays: rollback and name@{N} need them
            for nxt in (obj.target, obj.previous):
                if nxt is not None:
                    stack.append(nxt)
                    tips.add(nxt)
        elif isinstance(obj, Note):  # notes keep their own history, never the commits they annotate
            stack.extend(obj.parents)
            tips.update(obj.parents)
            for mid in attachments(obj):  # but what they attach (a probe's inputs and expected outputs)
                if mid not in reach.objects and repo.store.has_object(mid):
                    manifest = repo.store.get_object(mid)
                    if isinstance(manifest, Manifest):
                        reach.objects.add(mid)
                        reach.chunked.add(mid)
                        new_manifests.append(manifest)
        elif isinstance(obj, Commit):
            reach.commits.add(oid)
            stack.extend(obj.parents)
            archived = oid in repo.archived  # its chunks are on the cold remote: not needed here
            if archived:
                reach.archived.add(oid)
            if obj.manifest not in reach.objects or (not archived and obj.manifest not in reach.chunked):
                manifest = repo.store.get_object(obj.manifest)
                if not isinstance(manifest, Manifest):
                    raise MissingObject("manifest", obj.manifest.hex())
                reach.objects.add(obj.manifest)
                if not archived:
                    reach.chunked.add(obj.manifest)
                    new_manifests.append(manifest)
        else:
            raise UsageError(f"{oid.hex()} is a {type(obj).__name__.lower()}: no ref may name one")
    fresh = {c for m in new_manifests for c in m.chunk_ids()} - reach.chunks
    reach.chunks |= fresh
    reach.bases -= fresh
    _mark_bases(repo, fresh, reach)
    return reach


def attachments(note: Note) -> list[bytes]:
    """Manifests a note attaches: `{"attachment": HEX}` in any of its top-level values."""
    out = []
    for value in note.data.values():
        att = value.get("attachment") if isinstance(value, dict) else None
        if isinstance(att, str) and len(att) == 64:
            try:
                out.append(bytes.fromhex(att))
            except ValueError:
                continue
    return out


def _mark_bases(repo: Repository, chunks: Iterable[bytes], reach: Reach) -> None:
    """Follow each chunk's delta chain, from the frame headers, keeping every base on it."""
    locs = repo.store.index.get_many(list(chunks))
    for chunk in chunks:
        loc, depth = locs.get(chunk), 0
        if loc is None:
            reach.missing.add(chunk)
            continue
        cur = chunk
        while loc is not None and depth <= MAX_DELTA_DEPTH:
            try:
                base = repo.store.frame_base(loc, cur)
            except (codec.FrameError, OSError, CkstoreError):
                break  # fsck's to report; the frame itself is kept
            if base is None or cur in reach.base_of:
                break
            reach.base_of[cur] = base
            if base not in reach.chunks:
                reach.bases.add(base)
            cur, loc, depth = base, repo.store.index.get(base), depth + 1


def _why(reach: Reach, oid: bytes) -> str:
    return reach.roots.get(oid, "a kept commit")
