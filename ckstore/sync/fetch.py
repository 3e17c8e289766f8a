"""Fetch: download the commits, tags, manifests and chunks a remote has and this repository lacks (a partial
clone: only the chunks of the tensors its filter selects in the newest commits its depth names, and later on
demand), then move the remote-tracking refs.

Nothing from a remote is trusted: every object is decompressed with a bound and hashed against its id before it is
written under its final name, and every chunk frame is decoded and hashed before the pack holding it is sealed and
indexed."""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..engine.parallel import ordered_map
from ..engine.repository import Repository
from ..errors import CkstoreError, CorruptObject, RemoteNotFound
from ..fs.fileio import write_atomic
from ..model import codec, graph
from ..model.objects import Commit, Manifest, Tag, hash_bytes
from ..model.progress import NoProgress, Progress
from ..model.refnames import HEADS, REMOTES, TAGS, remote_ref
from ..results import SyncResult
from ..storage import remotes
from ..storage.packs import Entry
from ..storage.refs import ANY
from ..storage.remotes import RemoteSpec
from ..transport.base import Transport
from . import governance, session
from .remote_view import fetch_record
from .select import depth_of, manifest_chunks, topo_order
from .session import (
    Session,
    io_pool,
    load_index,
    missing_on,
    obj_key,
    open_spec,
    pack_key,
    remote_config,
    remote_head,
    remote_refs,
    verified_object,
)

MAX_RUN = 8 << 20               # one range GET covers at most this many bytes of frames...
RUN_GAP = 16 << 10              # ...and skips over gaps up to this size between wanted frames


RAW_LIMIT = 256 << 20  # verified raw chunks kept from the unsealed pack, for delta frames that name them


@dataclass
class _Fetched:
    heads: dict[str, bytes]
    tags: dict[str, bytes]
    head: str | None


def fetch(repo: Repository, remote_name: str | None = None, *, prune: bool = False,
          progress: Progress | None = None, transport: Transport | None = None) -> SyncResult:
    """Download what the remote has and this repository lacks; move refs/remotes/<name>/* (`prune`: delete those
    whose branch the remote no longer has, audited)."""
    spec = remotes.get(repo.dir, remote_name)
    remote = Session(transport or open_spec(spec, create=False), spec.name)
    try:
        return fetch_with(repo, spec, remote, progress or NoProgress(), prune=prune)[0]
    finally:
        if transport is None:
            remote.t.close()


def fetch_with(repo: Repository, spec: RemoteSpec, remote: Session, progress: Progress,
                action: str = "fetch", prune: bool = False) -> tuple[SyncResult, _Fetched]:
    """Fetch over an open session, moving remote-tracking refs and adding new tags; returns the result and refs seen."""
    result = SyncResult(action, spec.name, remote.url)
    io = io_pool()
    try:
        with repo.writing(action):  # a gc sweeps nothing while fetched chunks and objects land
            fetched = _fetch(repo, remote, io, spec.partial, result, progress)
            if prune:
                _prune(repo, remote, fetched, result)
    finally:
        io.shutdown(wait=True)
        result.bytes_sent, result.bytes_received = remote.sent, remote.received
    return result, fetched


def _fetch(repo: Repository, remote: Session, io: ThreadPoolExecutor, partial: dict | None, result: SyncResult,
           progress: Progress) -> _Fetched:
    store = repo.store
    remote_config(remote)
    heads = remote_refs(remote, io, HEADS, result.warnings)
    tags = remote_refs(remote, io, TAGS, result.warnings)
    head = remote_head(remote)

    def get_object(oid: bytes, limit: int = session.MAX_COMMIT) -> tuple[bytes, Any]:
        # a stored object is zstd: never larger than its bound on the decoded bytes (plus zstd's own overhead)
        data = remote.get_small(obj_key(oid), limit + limit // 128 + 4096)
        if data is None:
            raise missing_on("object", oid, remote.url)
        return data, verified_object(oid, data, remote.url, limit)

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
        return data, verified_object(oid, data, remote.url, session.MAX_COMMIT)

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
    wanted = list(dict.fromkeys(c for m in wanted_from for c in manifest_chunks(m, partial)))
    result.commits = len(commits)
    result.logical_bytes = sum(m.logical_bytes() for m in {fetched[c][1].manifest: manifest_of(c)
                                                           for c in commits}.values())
    fetch_chunks(repo, remote, io, wanted, result, progress)

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
    return _Fetched(heads, tags, head)


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


@dataclass
class _Run:
    pack: bytes
    start: int
    end: int
    items: list[tuple[bytes, Entry]]


def _coalesce(locs: dict[bytes, tuple[bytes, Entry]]) -> list[_Run]:
    by_pack: dict[bytes, list[tuple[bytes, Entry]]] = defaultdict(list)
    for c, (pack, e) in locs.items():
        by_pack[pack].append((c, e))
    runs: list[_Run] = []
    for pack, items in sorted(by_pack.items()):
        items.sort(key=lambda it: it[1].offset)
        cur: _Run | None = None
        for c, e in items:
            end = e.offset + e.length
            if cur is not None and e.offset <= cur.end + RUN_GAP and max(end, cur.end) - cur.start <= MAX_RUN:
                cur.end = max(cur.end, end)
                cur.items.append((c, e))
            else:
                cur = _Run(pack, e.offset, end, [(c, e)])
                runs.append(cur)
    return runs


def fetch_chunks(repo: Repository, remote: Session, io: ThreadPoolExecutor, wanted: list[bytes], result: SyncResult,
                  progress: Progress) -> None:
    """Fetch the `wanted` chunks the local index lacks, and the delta bases they need; all verified."""
    with repo.writing("fetch"):
        _fetch_chunks(repo, remote, io, wanted, result, progress)


def _fetch_chunks(repo: Repository, remote: Session, io: ThreadPoolExecutor, wanted: list[bytes], result: SyncResult,
                  progress: Progress) -> None:
    store = repo.store
    have = store.index.get_many(wanted)
    todo = [c for c in wanted if c not in have]
    if not todo:
        return
    cfg = remote.config if remote.config is not None else remote_config(remote)
    # a frame may hold at most one chunk: the remote's chunk size (or this repository's, whose chunks it may
    # have been pushed) plus the codec's headers; an index entry claiming more is not believed
    limits = session.FrameLimits.for_chunks(cfg.get("chunk_size", 1 << 20), repo.config.chunk_size)
    refused: dict[bytes, str] = {}
    ridx = load_index(repo, remote, io, result.warnings, limits, refused)
    sink = store.sink(session.PACK_LIMIT, index_each_pack=True, keep_raw=RAW_LIMIT)
    requested: set[bytes] = set()
    deferred: list[tuple[bytes, bytes, int, bytes]] = []     # delta frames waiting for their base
    url = remote.url

    def fetch_run(run: _Run) -> list[tuple[bytes, Entry, bytes, bytes | None, memoryview | None]]:
        key = pack_key(run.pack)
        try:
            data = remote.get(key, run.start, run.end)
        except RemoteNotFound:
            raise missing_on("pack", run.pack, url) from None
        if len(data) != run.end - run.start:
            raise CorruptObject("pack", run.pack.hex(), "?",
                                detail=f"{url}: truncated, {len(data)} of {run.end - run.start} bytes at "
                                       f"offset {run.start}")
        out = []
        for c, e in run.items:
            frame = data[e.offset - run.start:e.offset - run.start + e.length]
            raw = None
            try:
                base = codec.frame_base(frame)
                if base is None:
                    raw = codec.decode(frame, e.raw_length)
                    got = hash_bytes(raw)
                    if got != c:
                        raise CorruptObject("chunk", c.hex(), got.hex(), detail=f"from {url}")
            except codec.FrameError as exc:
                raise CorruptObject("chunk", c.hex(), "?", detail=f"from {url}: {exc}") from None
            out.append((c, e, frame, base, raw))
        return out

    def add_delta(c: bytes, frame: bytes, raw_length: int, base: bytes) -> bool:
        if not sink.has(base):
            return False
        try:
            raw = codec.decode(frame, raw_length, sink.chunk)
        except codec.FrameError as exc:
            raise CorruptObject("chunk", c.hex(), "?", detail=f"from {url}: {exc}") from None
        got = hash_bytes(raw)
        if got != c:
            raise CorruptObject("chunk", c.hex(), got.hex(), detail=f"from {url}")
        result.chunks += sink.add(c, bytes(frame), raw_length, raw)
        return True

    try:
        for _round in range(64):
            locs = {}
            for c in dict.fromkeys(todo):
                if c in requested or sink.has(c):
                    continue
                hit = ridx.get(c)
                if hit is None and c in refused:
                    raise CorruptObject("chunk", c.hex(), "?", detail=f"on {url}: {refused[c]}")
                if hit is None:
                    raise missing_on("chunk", c, url)
                locs[c] = hit
            requested.update(locs)
            runs = _coalesce(locs)
            progress.begin("fetch", sum(r.end - r.start for r in runs))
            bases: list[bytes] = []
            try:
                for frames in ordered_map(io, fetch_run, runs, window=2 * session.IO_WORKERS):
                    for c, e, frame, base, raw in frames:
                        if base is None:
                            result.chunks += sink.add(c, bytes(frame), e.raw_length, raw)
                        elif not add_delta(c, frame, e.raw_length, base):
                            deferred.append((c, frame, e.raw_length, base))
                            if base not in requested and base not in locs:
                                bases.append(base)
                    progress.advance(sum(f[1].length for f in frames))
            finally:
                progress.end()
            progress_made = True
            while deferred and progress_made:
                waiting, deferred = deferred, []
                progress_made = False
                for item in waiting:
                    if add_delta(*item):
                        progress_made = True
                    else:
                        deferred.append(item)
            todo = bases
            if not todo:
                break
        if deferred:
            c = deferred[0][0]
            raise CorruptObject("chunk", c.hex(), "?", detail=f"from {url}: its delta base "
                                f"{deferred[0][3].hex()[:12]} cannot be resolved")
        sink.seal()
    except BaseException:
        sink.abort()
        raise
    finally:
        result.packs += sink.packs
