"""Fetch: download the commits, tags, manifests and chunks a remote has and this repository lacks (a partial
clone: only the chunks of the tensors its filter selects in the newest commits its depth names, and later on
demand), then move the remote-tracking refs.

Nothing from a remote is trusted: every object is decompressed with a bound and hashed against its id before it is
written under its final name, and every chunk frame is decoded and hashed before the pack holding it is sealed and
indexed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from ..engine.repository import Repository
from ..errors import CkstoreError, CorruptObject
from ..fs.fileio import write_atomic
from ..model import graph
from ..model.objects import Commit, Manifest, Tag
from ..model.progress import NoProgress, Progress
from ..model.refnames import HEADS, REMOTES, TAGS, remote_ref
from ..results import SyncResult
from ..storage import remotes
from ..storage.refs import ANY
from ..storage.remotes import RemoteSpec
from ..transport.base import Transport
from . import governance, session
from .chunks import fetch_chunks
from .remote_view import fetch_record
from .select import chunks_in_order, depth_of, topo_order
from .remote_refs import remote_head, remote_refs, track_refs
from .session import (
    Session,
    io_pool,
    missing_on,
    obj_key,
    open_spec,
    remote_config,
    verified_object,
)


@dataclass
class _Fetched:
    heads: dict[str, bytes]
    tags: dict[str, bytes]
    head: str | None
    prefill: Any = None      # the files of the branch a clone checks out, written while the data arrived


def clone_head(head: str | None, heads: dict[str, bytes]) -> str | None:
    """The branch a clone of a remote with `heads` (and HEAD naming `head`) checks out: the remote's HEAD, else
    main, else the first by name."""
    return head if head in heads else ("main" if "main" in heads else next(iter(sorted(heads)), None))


def fetch(repo: Repository, remote_name: str | None = None, *, prune: bool = False,
          progress: Progress | None = None, transport: Transport | None = None) -> SyncResult:
    """Download what the remote has and this repository lacks; move refs/remotes/<name>/* (`prune`: delete those
    whose branch the remote no longer has, audited)."""
    spec = remotes.get(repo.dir, remote_name)
    remote = Session(transport or open_spec(spec, create=False), spec.name, repo.store.scheme)
    try:
        return fetch_with(repo, spec, remote, progress or NoProgress(), prune=prune)[0]
    finally:
        if transport is None:
            remote.t.close()


def fetch_with(repo: Repository, spec: RemoteSpec, remote: Session, progress: Progress,
               action: str = "fetch", prune: bool = False,
               checkout: Callable[[Manifest], Any] | None = None) -> tuple[SyncResult, _Fetched]:
    """Fetch over an open session, moving remote-tracking refs and adding new tags; returns the result and refs
    seen. `checkout` (a clone's) makes the writer of the files of `clone_head`'s commit, handed the chunks as
    they arrive (`engine.prefill.Prefill`); the caller finishes it."""
    result = SyncResult(action, spec.name, remote.url)
    io = io_pool()
    try:
        with repo.writing(action):  # a gc sweeps nothing while fetched chunks and objects land
            fetched = _fetch(repo, remote, io, spec.partial, result, progress, checkout)
            if prune:
                _prune(repo, remote, fetched, result)
    finally:
        io.shutdown(wait=True)
        result.bytes_sent, result.bytes_received = remote.sent, remote.received
    return result, fetched


def _fetch(repo: Repository, remote: Session, io: ThreadPoolExecutor, partial: dict | None, result: SyncResult,
           progress: Progress, checkout: Callable[[Manifest], Any] | None = None) -> _Fetched:
    store = repo.store
    remote_config(remote)
    track_refs(remote, repo)
    heads = remote_refs(remote, io, HEADS, result.warnings)
    tags = remote_refs(remote, io, TAGS, result.warnings)
    head = remote_head(remote)

    def get_object(oid: bytes, limit: int = session.MAX_COMMIT) -> tuple[bytes, Any]:
        # a stored object is zstd: never larger than its bound on the decoded bytes (plus zstd's own overhead)
        data = remote.get_small(obj_key(oid), limit + limit // 128 + 4096)
        if data is None:
            raise missing_on("object", oid, remote.url)
        return data, verified_object(oid, data, remote.url, limit, scheme=remote.scheme)

    def get_manifest(oid: bytes) -> tuple[bytes, Any]:
        return get_object(oid, session.MAX_MANIFEST)

    # walk from every remote tip, getting the commits and tag objects this repository lacks
    fetched: dict[bytes, tuple[bytes, Any]] = {}
    expect: dict[bytes, tuple] = {}
    for oid in heads.values():
        expect.setdefault(oid, (Commit,))
    for oid in tags.values():
        expect.setdefault(oid, (Commit, Tag))
    alias_heads = governance.remote_aliases(repo, remote, result.warnings)  # their move chains, verified
    for oid in governance.alias_targets(repo, alias_heads):  # every commit an alias named: rollback needs them
        expect.setdefault(oid, (Commit,))
    frontier = list(expect)
    tips = set(expect)
    records: dict = {}   # dropped/<id> records of parents the remote no longer has

    def get_or_record(oid: bytes) -> tuple[bytes, Any] | None:
        data = remote.get_small(obj_key(oid), session.MAX_COMMIT + session.MAX_COMMIT // 128 + 4096)
        if data is None:
            return None
        return data, verified_object(oid, data, remote.url, session.MAX_COMMIT, scheme=remote.scheme)

    while frontier:
        # a commit dropped here is not fetched again (unless a remote ref names it); one this repository holds
        # never takes a record from the remote: a remote cannot make local data garbage
        todo = [o for o in dict.fromkeys(frontier) if o not in fetched and o not in records
                and not store.has_object(o) and (o not in repo.dropped or o in tips)]
        frontier = []
        for oid, got in zip(todo, io.map(get_or_record, todo)):
            if got is None:
                rec = None if oid in tips else fetch_record(remote, oid)
                if rec is None:
                    raise missing_on("object", oid, remote.url)
                records[oid] = rec
                for p in rec.parents:
                    expect.setdefault(p, (Commit,))
                frontier += list(rec.parents)
                continue
            data, obj = got
            if not isinstance(obj, expect.get(oid, (Commit,))):
                raise CorruptObject("object", oid.hex(), oid.hex(),
                                    detail=f"on {remote.url}: expected a commit or tag, found a {type(obj).__name__}")
            fetched[oid] = (data, obj)
            nxt = [obj.target] if isinstance(obj, Tag) else list(obj.parents)
            for p in nxt:
                expect.setdefault(p, (Commit, Tag) if isinstance(obj, Tag) else (Commit,))
            frontier += nxt
    commits = {o for o, (_, obj) in fetched.items() if isinstance(obj, Commit)}
    mids = list(dict.fromkeys(fetched[c][1].manifest for c in topo_order(commits, lambda o: fetched[o][1].parents)))
    new_mids = [m for m in mids if not store.has_object(m)]
    manifests: dict[bytes, tuple[bytes, Any]] = dict(zip(new_mids, io.map(get_manifest, new_mids)))
    for mid, (_, obj) in manifests.items():
        if not isinstance(obj, Manifest):
            raise CorruptObject("object", mid.hex(), mid.hex(), detail=f"on {remote.url}: expected a manifest")

    def manifest_of(c: bytes) -> Manifest:
        mid = fetched[c][1].manifest
        return manifests[mid][1] if mid in manifests else store.get_object(mid)

    # the chunks they need (a partial remote: only the selected tensors of the newest `depth` commits of each
    # branch, new or already here, so a fetch after a shallow clone brings the new tips, not the history between)
    depth = depth_of(partial)
    if depth is None:
        wanted_from = [manifest_of(c) for c in topo_order(commits, lambda o: fetched[o][1].parents)]
    else:
        def seen_parents(c: bytes) -> tuple[bytes, ...]:
            if c not in fetched:
                return repo.parents(c) if store.has_object(c) else ()
            # a parent the remote dropped stands for the kept commits behind it, as in any history walk
            out, todo, passed = [], list(fetched[c][1].parents), set()
            while todo:
                p = todo.pop(0)
                if p in records and p not in passed:   # `passed`: a hostile remote's records may form a cycle
                    passed.add(p)
                    todo[:0] = records[p].parents
                elif p not in records and p not in out:
                    out.append(p)
            return repo.past_dropped(tuple(out))

        line = graph.first_parents(list(dict.fromkeys(heads.values())), seen_parents, depth)
        wanted_from = [manifest_of(c) if c in fetched else repo.manifest_of(c) for c in line
                       if c in commits or store.has_object(c)]
    wanted = chunks_in_order(wanted_from, partial)
    result.commits = len(commits)
    result.logical_bytes = sum(m.logical_bytes() for m in {fetched[c][1].manifest: manifest_of(c)
                                                           for c in commits}.values())
    prefill, branch = None, clone_head(head, heads) if checkout is not None else None
    if branch is not None:
        tip = heads[branch]
        prefill = checkout(manifest_of(tip) if tip in fetched else repo.manifest_of(tip))
    fetch_chunks(repo, remote, io, wanted, result, progress, prefill.put if prefill is not None else None)

    # objects under their final names: manifests, commits parents first, tag objects
    def write(oid: bytes, data: bytes) -> None:
        if write_atomic(store.object_path(oid), data, store.tmp_dir, exclusive=True):
            result.objects += 1

    for mid, (data, _) in manifests.items():
        write(mid, data)
    repo.dropped.add(list(records.values()))   # before the commits whose stored parents they stand for
    for c in topo_order(commits, lambda o: fetched[o][1].parents):
        write(c, fetched[c][0])
    for oid, (data, obj) in fetched.items():
        if isinstance(obj, Tag):
            write(oid, data)

    # refs: remote-tracking branches move; tags are created when absent, never moved
    for name, oid in sorted(heads.items()):
        ref = remote_ref(remote.name, name)
        try:
            old = repo.refs.read(ref)
        except CkstoreError:
            old = None
        if old != oid:
            repo.refs.update(ref, oid, ANY, action="fetch", message=remote.url)
            result.refs.append({"ref": ref, "old": old.hex() if old else None, "new": oid.hex(),
                                "status": "created" if old is None else "updated", "forced": False})
    for name, oid in sorted(tags.items()):
        ref = TAGS + name
        old = repo.refs.read(ref)
        if old is None:
            repo.refs.update(ref, oid, None, action="fetch", message=remote.url)
            result.refs.append({"ref": ref, "old": None, "new": oid.hex(), "status": "created", "forced": False})
        elif old != oid:
            result.warnings.append(f"local tag {name} is {old.hex()[:12]}, the remote's is {oid.hex()[:12]}: "
                                   "kept the local one (tags never move)")
    governance.take_aliases(repo, alias_heads, result, remote.url)
    governance.fetch_notes(repo, remote, io, result)
    return _Fetched(heads, tags, head, prefill)


def _prune(repo: Repository, remote: Session, fetched: _Fetched, result: SyncResult) -> None:
    """Delete the remote-tracking refs whose branch the remote no longer lists (audited `fetch-prune`); a branch
    listed but unreadable is kept."""
    listed = {k[len(HEADS):] for k in remote.list(HEADS.rstrip("/"))}
    prefix = f"{REMOTES}{remote.name}/"
    for ref, oid in repo.refs.list(prefix).items():
        name = ref[len(prefix):]
        if name in fetched.heads or name in listed:
            continue
        repo.refs.update(ref, None, oid, action="fetch-prune", message=remote.url)
        result.refs.append({"ref": ref, "old": oid.hex(), "new": None, "status": "pruned", "forced": False})
