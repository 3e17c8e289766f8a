"""A remote's history, read-only and verified: its refs, commit, tag and manifest objects, its `dropped/` records,
its pack index per pack, and a mark of what its roots keep (gc --remote, forget --remote, archive checks).

`RemoteView` offers the few methods `engine.forget.candidates` asks of a repository (`refs.list`, `peel`,
`parents`, `commit`), so one retention implementation serves local and remote history. Every object is hashed
against its id, every record parsed and checked, every `.idx` checksummed before anything is believed.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..engine.reach import attachments
from ..engine.repository import Repository
from ..errors import CorruptObject, MissingObject, RemoteError
from ..fs.fileio import write_atomic
from ..model import codec
from ..model.objects import AliasMove, Commit, Manifest, Note, Tag
from ..model.refnames import ALIASES, HEADS, NOTES, TAGS
from ..storage import remotes
from ..storage.config import MAX_DELTA_DEPTH
from ..storage.packs import ENTRY, FOOTER, Entry
from ..storage.records import Dropped, parse_dropped
from . import session
from .remote_refs import remote_refs
from .session import Session, missing_on, obj_key, pack_key, remote_idx, verified_object

ARCHIVE = "refs/archive/"       # a cold remote's root per archived commit (never fetched as a branch or tag)
DROPPED = "dropped/"
MAX_RECORD = 64 << 10
_PACK_KEY = re.compile(r"^packs/([0-9a-f]{2})/([0-9a-f]{64})\.(pack|idx)$")
_OBJ_KEY = re.compile(r"^objects/([0-9a-f]{2})/([0-9a-f]{62})$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def record_key(oid: bytes) -> str:
    """The remote key of a commit's dropped record."""
    return DROPPED + oid.hex()


def fetch_record(remote: Session, oid: bytes) -> Dropped | None:
    """The remote's dropped record of `oid`, validated (well-formed, parents 64-digit ids), or None if it has
    none; RemoteError for a record that does not parse (nothing is believed unchecked)."""
    data = remote.get_small(record_key(oid), MAX_RECORD)
    if data is None:
        return None
    rec = parse_dropped(oid, data)
    if rec is None or oid in rec.parents:
        raise RemoteError(f"{remote.url}: {record_key(oid)} is not a valid dropped record", url=remote.url,
                          key=record_key(oid), hint="repair or delete that key on the remote")
    return rec


class _Refs:
    """The `refs.list()` of a view: full ref names to ids."""

    def __init__(self, refs: dict[str, bytes]) -> None:
        self._refs = refs

    def list(self, prefix: str = "", errors: list | None = None) -> dict[str, bytes]:
        """Refs whose full name starts with `prefix`."""
        return {k: v for k, v in sorted(self._refs.items()) if k.startswith(prefix)}


class RemoteView:
    """The history of a remote as `engine.forget` and the remote mark see it (every read verified, cached)."""

    def __init__(self, remote: Session, io: ThreadPoolExecutor, warnings: list[str], *,
                 archive_refs: bool = True, objects: dict[bytes, Any] | None = None) -> None:
        self.remote, self.io, self.warnings = remote, io, warnings
        refs = {HEADS + n: v for n, v in remote_refs(remote, io, HEADS, warnings).items()}
        refs.update({TAGS + n: v for n, v in remote_refs(remote, io, TAGS, warnings).items()})
        self.archive = {ARCHIVE + n: v for n, v in remote_refs(remote, io, ARCHIVE, warnings).items()}
        if archive_refs:  # gc's view: every root, the aliases' and notes' histories too
            refs.update(self.archive)
            for prefix in (ALIASES, NOTES):
                refs.update({prefix + n: v for n, v in remote_refs(remote, io, prefix, warnings).items()})
        self.refs = _Refs(refs)
        self.dropped_ids = {bytes.fromhex(k[len(DROPPED):]) for k in remote.list(DROPPED.rstrip("/"))
                            if _HEX64.match(k[len(DROPPED):])}
        self._objects: dict[bytes, Any] = {} if objects is None else objects  # immutable: shareable
        self._records: dict[bytes, Dropped | None] = {}

    @property
    def objects(self) -> dict[bytes, Any]:
        """The objects read so far (immutable, so another view of the same remote may share them)."""
        return self._objects

    # -- objects and records ----------------------------------------------------------------------------------
    def get(self, oid: bytes, limit: int = session.MAX_COMMIT) -> Any | None:
        """The verified object `oid`, or None when the remote lacks it."""
        if oid not in self._objects:
            data = self.remote.get_small(obj_key(oid), limit + limit // 128 + 4096)
            self._objects[oid] = None if data is None else verified_object(oid, data, self.remote.url, limit,
                                                                               scheme=self.remote.scheme)
        return self._objects[oid]

    def prefetch(self, oids: list[bytes], limit: int = session.MAX_COMMIT) -> None:
        """Read these objects (several requests in flight)."""
        todo = [o for o in dict.fromkeys(oids) if o not in self._objects]
        list(self.io.map(lambda o: self.get(o, limit), todo))

    def record(self, oid: bytes) -> Dropped | None:
        """The remote's dropped record of `oid` (None when it has none)."""
        if oid not in self.dropped_ids:
            return None
        if oid not in self._records:
            self._records[oid] = fetch_record(self.remote, oid)
        return self._records[oid]

    def commit(self, oid: bytes) -> Commit:
        """The commit `oid`; MissingObject when the remote lacks it."""
        obj = self.get(oid)
        if not isinstance(obj, Commit):
            raise missing_on("commit", oid, self.remote.url)
        return obj

    def peel(self, oid: bytes) -> bytes:
        """The commit an id names (through annotated tags)."""
        obj = self.get(oid)
        while isinstance(obj, Tag):
            oid = obj.target
            obj = self.get(oid)
        if not isinstance(obj, Commit):
            raise missing_on("commit", oid, self.remote.url)
        return oid

    def commit_refs(self) -> dict[str, bytes]:
        """Every ref with the commit it names (through annotated tags)."""
        return {name: self.peel(oid) for name, oid in self.refs.list().items()}

    def parents(self, oid: bytes) -> tuple[bytes, ...]:
        """Parents as history walks see them: a dropped parent replaced by the kept commits behind it."""
        out: list[bytes] = []
        seen: set[bytes] = set()
        stack = list(reversed(self.commit(oid).parents))
        while stack:
            p = stack.pop()
            if p in seen:
                continue
            seen.add(p)
            rec = self.record(p)
            if rec is None:
                out.append(p)
            else:
                stack.extend(reversed(rec.parents))
        return tuple(out)

    def load_history(self, tips: list[bytes]) -> None:
        """Read every commit the tips reach, a generation at a time (several requests in flight)."""
        frontier = list(tips)
        seen: set[bytes] = set()
        while frontier:
            frontier = [o for o in dict.fromkeys(frontier) if o not in seen]
            seen.update(frontier)
            self.prefetch(frontier)
            list(self.io.map(self.record, [o for o in frontier if o in self.dropped_ids]))
            nxt = []
            for oid in frontier:
                obj = self._objects.get(oid)
                if isinstance(obj, Tag):
                    nxt.append(obj.target)
                elif isinstance(obj, Commit):
                    nxt.extend(obj.parents)
                elif self._records.get(oid) is not None:
                    nxt.extend(self._records[oid].parents)
            frontier = nxt


# ---------------------------------------------------------------------------------------------- pack index
def remote_packs(repo: Repository, remote: Session, io: ThreadPoolExecutor, warnings: list[str]
                 ) -> tuple[dict[bytes, list[Entry] | None], set[str], set[bytes]]:
    """({pack id: entries, None when its .idx is damaged} for packs listed with their .idx, stray pack keys
    (a .pack without .idx or the reverse), object ids) of the remote. Each .idx is read from this repository's
    cache of the remote when it is there, else downloaded, checksummed and cached."""
    packs: dict[bytes, set[str]] = {}
    objects: set[bytes] = set()
    for key in remote.list("packs"):
        m = _PACK_KEY.match(key)
        if m and m.group(1) == m.group(2)[:2]:
            packs.setdefault(bytes.fromhex(m.group(2)), set()).add(m.group(3))
    for key in remote.list("objects"):
        m = _OBJ_KEY.match(key)
        if m:
            objects.add(bytes.fromhex(m.group(1) + m.group(2)))
    whole = [p for p, kinds in packs.items() if kinds == {"pack", "idx"}]
    strays = {pack_key(p, "." + k) for p, kinds in packs.items() if len(kinds) == 1 for k in kinds}

    def load(pack_id: bytes) -> list[Entry] | None:  # a damaged .idx: its pack is kept, never deleted on a guess
        return remote_idx(repo, remote, pack_id, warnings)

    return dict(zip(whole, io.map(load, whole))), strays, objects


def pack_size(entries: list[Entry]) -> int:
    """The bytes of a pack with these entries (frames, trailer, footer) plus its .idx."""
    end = max((e.offset + e.length for e in entries), default=8)
    trailer = ENTRY.size * len(entries) + FOOTER.size
    return end + trailer + 32 + trailer


# ---------------------------------------------------------------------------------------------- the mark
@dataclass
class RemoteReach:
    """What a remote's roots keep."""

    roots: dict[bytes, str] = field(default_factory=dict)
    commits: set[bytes] = field(default_factory=set)
    objects: set[bytes] = field(default_factory=set)
    chunks: set[bytes] = field(default_factory=set)
    bases: set[bytes] = field(default_factory=set)
    base_of: dict[bytes, bytes | None] = field(default_factory=dict)  # chunk -> its frame's base (headers read)
    missing: set[bytes] = field(default_factory=set)                  # chunks kept commits name, not on the remote

    @property
    def live_chunks(self) -> set[bytes]:
        """Every chunk whose frame must stay on the remote."""
        return self.chunks | self.bases


def mark(view: RemoteView, start: dict[bytes, str], into: RemoteReach | None = None,
         dropping: dict[bytes, Dropped] | None = None) -> RemoteReach:
    """Everything the roots in `start` keep on the remote, added to `into`. Like `engine.reach.mark`: a dropped
    commit (not itself a root) keeps nothing but is passed through; a root or kept commit the remote lacks, with
    no record, raises MissingObject (nothing is deleted on a guess). `dropping`: records to treat as written."""
    reach = into or RemoteReach()
    reach.roots.update(start)
    tips = set(start)
    view.load_history(list(start))
    stack = [o for o in start if o not in reach.objects]
    seen: set[bytes] = set()
    passed: set[bytes] = set()
    manifests: list[bytes] = []
    attached: list[bytes] = []  # manifests notes attach (probes): kept when the remote has them, not required
    while stack:
        oid = stack.pop()
        if oid in seen or oid in reach.objects:
            continue
        rec = (dropping or {}).get(oid) or view.record(oid)
        if rec is not None and oid not in tips:
            if oid in passed:
                continue
            passed.add(oid)  # passed through, not seen: a later alias or tag may still name it and keep it
            stack.extend(rec.parents)
            continue
        seen.add(oid)
        obj = view.get(oid)
        if obj is None:
            if rec is not None:
                stack.extend(rec.parents)
                continue
            exc = MissingObject("object", oid.hex())
            exc.hint = (f"it is reached from {reach.roots.get(oid, 'a kept commit')} on {view.remote.url}; "
                        "run `ckstore fsck --remote` (gc deletes nothing while the remote's history is incomplete)")
            raise exc
        reach.objects.add(oid)
        if isinstance(obj, Tag):
            stack.append(obj.target)
            tips.add(obj.target)
        elif isinstance(obj, Commit):
            reach.commits.add(oid)
            stack.extend(obj.parents)
            manifests.append(obj.manifest)
        elif isinstance(obj, AliasMove):  # as engine.reach: every holder an alias had stays, and its history
            nxt = [x for x in (obj.target, obj.previous) if x is not None]
            stack.extend(nxt)
            tips.update(nxt)
        elif isinstance(obj, Note):  # its history and its attachments, never the commit it annotates
            stack.extend(obj.parents)
            tips.update(obj.parents)
            attached.extend(attachments(obj))
        else:
            raise CorruptObject("object", oid.hex(), oid.hex(), detail=f"on {view.remote.url}: a ref or history "
                                f"names a {type(obj).__name__.lower()}")
    manifests += [m for m in attached if isinstance(view.get(m, session.MAX_MANIFEST), Manifest)]
    new = [m for m in dict.fromkeys(manifests) if m not in reach.objects]
    view.prefetch(new, session.MAX_MANIFEST)
    for mid in new:
        m = view.get(mid, session.MAX_MANIFEST)
        if not isinstance(m, Manifest):
            raise missing_on("manifest", mid, view.remote.url)
        reach.objects.add(mid)
        reach.chunks |= m.chunk_ids()
    reach.bases -= reach.chunks
    return reach


def mark_bases(repo: Repository, view: RemoteView, reach: RemoteReach,
               packs: dict[bytes, list[Entry] | None]) -> None:
    """Keep every delta base of a kept chunk: frame headers are read with ranged GETs (only for kept chunks whose
    raw length some chunk of an otherwise-unneeded pack shares: a base has its dependant's raw length) and cached
    per pack in this repository, packs being immutable. A header that cannot be read raises: nothing is
    deleted on a guess."""
    where: dict[bytes, tuple[bytes, Entry]] = {}
    for pack_id, entries in packs.items():
        for e in entries or ():
            where.setdefault(e.chunk, (pack_id, e))
    cache = remotes.cache_dir(repo.dir, view.remote.name)
    loaded: dict[bytes, dict[str, str | None]] = {}

    def cached(pack_id: bytes) -> dict[str, str | None]:
        if pack_id not in loaded:
            try:
                raw = json.loads((cache / f"{pack_id.hex()}.bases").read_text())
                loaded[pack_id] = raw if isinstance(raw, dict) else {}
            except (OSError, ValueError):
                loaded[pack_id] = {}
        return loaded[pack_id]

    def header(chunk: bytes) -> bytes | None:
        pack_id, e = where[chunk]
        known = cached(pack_id)
        if chunk.hex() in known:
            v = known[chunk.hex()]
            return bytes.fromhex(v) if isinstance(v, str) and _HEX64.match(v) else None
        # the header alone, or in an encrypted remote the whole frame, opened
        n = e.length if view.remote.scheme.encrypted else min(e.length, codec.HEADER.size + 32)
        data = view.remote.get(pack_key(pack_id), e.offset, e.offset + n)
        try:
            base = codec.frame_base(view.remote.scheme.open_frame(chunk, data))
        except (codec.FrameError, CorruptObject) as exc:
            raise CorruptObject("chunk", chunk.hex(), "?", detail=f"on {view.remote.url}: unreadable frame header "
                                f"in pack {pack_id.hex()[:12]}: {exc}") from None
        return base

    for _ in range(MAX_DELTA_DEPTH + 2):
        live = reach.live_chunks
        for c in live:
            if c not in where:
                reach.missing.add(c)
        kept = {where[c][0] for c in live if c in where}
        lengths = {e.raw_length for p, entries in packs.items() if p not in kept for e in entries or ()}
        todo = [c for c in live if c in where and c not in reach.base_of and where[c][1].raw_length in lengths]
        if not todo:
            return
        for c, base in zip(todo, view.io.map(header, todo)):
            reach.base_of[c] = base
            pack_id = where[c][0]
            known = cached(pack_id)
            if c.hex() not in known:
                known[c.hex()] = base.hex() if base else None
                known["_dirty"] = "1"
            if base is not None and base not in reach.chunks:
                reach.bases.add(base)
        for pack_id, known in loaded.items():
            if known.pop("_dirty", None):
                cache.mkdir(parents=True, exist_ok=True)
                write_atomic(cache / f"{pack_id.hex()}.bases", json.dumps(known).encode(), repo.store.tmp_dir)
    raise CorruptObject("chunk", "?", "?", detail=f"on {view.remote.url}: delta chains deeper than "
                        f"{MAX_DELTA_DEPTH}")
