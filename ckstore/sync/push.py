"""Push: upload what a remote lacks in dependency order — chunk packs (pack, then its `.idx`), manifests, commits
parents first, tag objects — then move its refs by compare-and-swap, so a remote that has a commit has its whole
history and data, and an interrupted push leaves only hash-named garbage."""

from __future__ import annotations

import json
import secrets
import socket
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from ..engine.parallel import ordered_map
from ..engine.protect import rule_for
from ..engine.repository import Repository
from ..errors import (
    CorruptObject,
    MissingObject,
    NonFastForward,
    ProtectedRef,
    UnknownRevision,
    UnsupportedFormat,
    UsageError,
)
from ..model import codec, graph
from ..model.objects import Commit, Manifest
from ..model.progress import NoProgress, Progress
from ..model.refnames import ALIASES, HEADS, TAGS, check_ref_name, remote_ref
from ..results import SyncResult
from ..storage import remotes
from ..storage.audit import whoami
from ..storage.packs import ENTRY, idx_bytes, pack_bytes
from ..storage.refs import ANY
from ..storage.recent import RecentChunks
from ..transport.base import Transport
from . import governance, session
from .remote_leases import RemoteLease
from .remote_view import record_key
from .select import chunks_in_order, topo_order
from .remote_refs import move_ref, read_ref, track_refs, upload_keys
from .session import (
    Session,
    add_remote_features,
    cache_idx,
    io_pool,
    load_index,
    obj_key,
    open_spec,
    pack_key,
    remote_config,
    verified_object,
)

PACKS_IN_FLIGHT = 2             # pushed packs being uploaded at once (each held in memory)
RECENT_LIMIT = 32 << 20         # verified chunks kept while pushing, for the delta frames just after them


def push(repo: Repository, remote_name: str | None = None, branches: list[str] | None = None, *, all: bool = False,
         tags: bool = False, force: bool = False, progress: Progress | None = None,
         transport: Transport | None = None) -> SyncResult:
    """Upload branches (and tags) to a remote, refusing a non-fast-forward unless `force`."""
    return push_refs(repo, remote_name, _push_targets(repo, branches, all, tags), force=force, progress=progress,
                     transport=transport)


def push_refs(repo: Repository, remote_name: str | None, targets: dict[str, bytes], *, force: bool = False,
              progress: Progress | None = None, transport: Transport | None = None,
              action: str = "push") -> SyncResult:
    """Upload these refs ({full ref name: id}) with their history and data, under a remote writer lease."""
    spec = remotes.get(repo.dir, remote_name)
    remote = Session(transport or open_spec(spec, create=True), spec.name, repo.store.scheme)
    result = SyncResult(action, spec.name, remote.url)
    io = io_pool()
    try:
        with RemoteLease(remote, action):  # a remote gc deletes nothing while this push may dedup against it
            _push(repo, remote, io, result, targets, force, progress or NoProgress())
    finally:
        io.shutdown(wait=True)
        result.bytes_sent, result.bytes_received = remote.sent, remote.received
        if transport is None:
            remote.t.close()
    return result


def _push_targets(repo: Repository, branches: list[str] | None, all_branches: bool, tags: bool) -> dict[str, bytes]:
    targets: dict[str, bytes] = {}
    if all_branches:
        targets.update(repo.refs.list(HEADS))
    elif branches:
        for b in branches:
            ref = HEADS + check_ref_name(b.removeprefix(HEADS))
            oid = repo.refs.read(ref)
            if oid is None:
                raise UnknownRevision(f"no local branch named {b!r}", hint="see `ckstore branch`")
            targets[ref] = oid
    elif not tags:
        ref = repo.refs.head()
        oid = repo.refs.read(ref)
        if oid is None:
            raise UnknownRevision(f"{ref.removeprefix(HEADS)} has no commits to push", hint="commit something first")
        targets[ref] = oid
    if tags:
        targets.update(repo.refs.list(TAGS))
    if targets:
        targets.update(repo.refs.list(ALIASES))  # aliases (and notes, after the refs) travel with every push
    if not targets:
        raise UsageError("nothing to push", hint="name a branch, or pass --all or --tags")
    return targets


def _push(repo: Repository, remote: Session, io: ThreadPoolExecutor, result: SyncResult, targets: dict[str, bytes],
          force: bool, progress: Progress) -> None:
    store = repo.store
    upload_keys(repo, remote)        # before the config: a remote that says it is encrypted has its key files
    cfg = add_remote_features(remote, remote_config(remote, create_from=(repo.dir / "config").read_bytes()),
                              repo.config.features)
    track_refs(remote, repo)
    theirs = cfg.get("chunk_size")
    if isinstance(theirs, int) and repo.config.chunk_size > theirs:
        # Fetches bound a remote's frames by its chunk size: bigger chunks pushed here would be refused by clones.
        raise UnsupportedFormat(f"this repository's chunk size ({repo.config.chunk_size} bytes) is larger than the "
                                f"remote {remote.url}'s ({theirs} bytes): its clones would refuse these frames",
                                hint="push to a remote made by this repository (or one with an equal or larger "
                                     "chunk size)")

    # 1. what the remote refs hold now; refuse non-fast-forwards before moving any data
    current = dict(zip(targets, io.map(lambda r: read_ref(remote, r), targets)))
    on_remote: set[bytes] = set()
    plan = []
    rules = cfg.get("protect") if isinstance(cfg.get("protect"), dict) else {}  # the remote's rules bind pushers
    aliases = []
    for ref, new in targets.items():
        old, etag = current[ref]
        if ref.startswith(ALIASES):
            if old != new:
                try:
                    moves = governance.check_alias_push(repo, rules, ref, old, new)
                except NonFastForward as exc:
                    result.warnings.append(f"{exc} (left alone)")
                    continue
                aliases.append((ref, old, etag, new, moves))
            continue
        new_commit = repo.peel(new)
        if old == new:
            result.refs.append({"ref": ref, "old": old.hex(), "new": new.hex(), "status": "up-to-date",
                                "forced": False})
            continue
        if ref.startswith(TAGS) and old is not None:
            result.warnings.append(f"remote tag {ref.removeprefix(TAGS)} is {old.hex()[:12]}, not "
                                   f"{new.hex()[:12]}: tags never move, so it was left alone")
            continue
        forced = False
        if old is not None:
            known = store.has_object(old) and isinstance(store.get_commit_or_object(old), Commit)
            if known:
                on_remote |= graph.ancestors(old, repo.parents)
            if not (known and graph.is_ancestor(old, new_commit, repo.parents)):
                if not force:
                    raise NonFastForward(
                        f"push of {ref.removeprefix(HEADS)} to {remote.name} refused: the remote has "
                        f"{old.hex()[:12]}, which is not an ancestor of {new.hex()[:12]} (non-fast-forward)")
                forced = True
                rule = rule_for(rules, ref)
                if rule is not None and rule.ff_only:
                    raise ProtectedRef(f"{ref} is protected on {remote.name} (fast-forward only): a forced push "
                                       "is refused", hint="the rule is in the remote's config")
        plan.append((ref, old, etag, new, new_commit, forced))
    targets_of_aliases = [m.target for _, _, _, new, moves in aliases for m in
                          (store.get_object(x) for x in moves) if m.target is not None]
    if not plan and not aliases:
        governance.push_notes(repo, remote, io, result)
        governance.anchor_audit(repo, remote)
        return

    # 2. commits the remote lacks (walk from each tip, stopping at commits it has)
    new_commits: set[bytes] = set()
    frontier = list(dict.fromkeys([p[4] for p in plan] + targets_of_aliases))
    seen: set[bytes] = set()
    while frontier:
        frontier = [c for c in dict.fromkeys(frontier) if c not in seen and c not in on_remote]
        seen.update(frontier)
        has = list(io.map(lambda c: remote.exists(obj_key(c)), frontier))
        nxt = []
        for c, h in zip(frontier, has):
            if not h:
                new_commits.add(c)
                nxt.extend(repo.parents(c))
        frontier = nxt
    order = topo_order(new_commits, repo.parents)
    manifests: dict[bytes, Manifest] = {}
    for c in order:
        mid = repo.commit(c).manifest
        if mid not in manifests:
            m = store.get_object(mid)
            if not isinstance(m, Manifest):
                raise CorruptObject("manifest", mid.hex(), "?",
                                    detail=f"commit {c.hex()[:12]} names a {type(m).__name__}")
            manifests[mid] = m
    result.commits = len(order)
    result.logical_bytes = sum(m.logical_bytes() for m in manifests.values())

    # 3. chunks the remote lacks, plus the delta bases they need
    needed = chunks_in_order(list(manifests.values()))
    ridx = load_index(repo, remote, io, result.warnings) if needed else {}
    missing = [c for c in needed if c not in ridx]
    locs = store.index.get_many(missing)

    def base_of(c: bytes) -> bytes | None:
        loc = locs.get(c) or store.index.get(c)
        if loc is None:
            exc = MissingObject("chunk", c.hex())
            exc.hint = "neither this repository nor the remote has it (a partial clone?); fetch it first"
            raise exc
        locs[c] = loc
        return store.frame_base(loc, c)

    # in `chunks_in_order`'s order, each delta just after its base: a chunk's chain is walked down to a frame the
    # remote can resolve (a full frame, or one whose base it has) and what it lacks goes out bases first, so a
    # fetch reading the packs in order verifies every delta while its base is still in memory
    ordered: list[bytes] = []
    placed: set[bytes] = set()
    for c in missing:
        chain, x = [], c
        while x is not None and x not in placed and x not in ridx:
            if len(chain) > 64:
                raise CorruptObject("chunk", c.hex(), "?", detail="delta chain too deep or circular")
            chain.append(x)
            x = base_of(x)
        placed.update(chain)
        ordered += reversed(chain)
    result.chunks = len(ordered)
    progress.begin("push", sum(locs[c].length for c in ordered))
    try:
        _upload_packs(repo, remote, io, ordered, locs, result, progress)
    finally:
        progress.end()

    # 4. objects: manifests, then commits parents first, then tag objects
    def put_object(oid: bytes) -> bool:
        data = store.object_path(oid).read_bytes()
        verified_object(oid, data, "the local store", scheme=repo.store.scheme)
        return remote.put_new(obj_key(oid), data)

    result.objects += sum(io.map(put_object, list(manifests)))
    records = _records_to_push(repo, remote, order)     # a kept commit's dropped parents: history goes on there
    list(io.map(lambda r: remote.put_new(record_key(r.oid), r.encode()), records))
    for c in order:
        result.objects += put_object(c)
    for ref, old, etag, new, new_commit, forced in plan:
        if new != new_commit and not remote.exists(obj_key(new)):
            result.objects += put_object(new)
    for ref, old, etag, new, moves in aliases:
        result.objects += governance.upload_moves(repo, remote, io, moves)

    # 5. refs by compare-and-swap; then the local tracking ref, the audit log and the remote's push log
    for ref, old, etag, new, new_commit, forced in plan:
        move_ref(remote, ref, new, old, etag)
        status = "created" if old is None else ("forced" if forced else "updated")
        result.refs.append({"ref": ref, "old": old.hex() if old else None, "new": new.hex(), "status": status,
                            "forced": forced})
        action = "push-force" if forced else "push"
        message = f"{remote.url} {ref}"
        if ref.startswith(HEADS):
            repo.refs.update(remote_ref(remote.name, ref.removeprefix(HEADS)), new, ANY, action=action,
                             message=message)
        else:
            repo.refs.audit.append(action, ref, old, new, message)
        _push_log(remote, ref, old, new, forced)
    for ref, old, etag, new, moves in aliases:
        move_ref(remote, ref, new, old, etag)
        result.refs.append({"ref": ref, "old": old.hex() if old else None, "new": new.hex(),
                            "status": "created" if old is None else "updated", "forced": False})
        repo.refs.audit.append("push", ref, old, new, f"{remote.url} {ref}")
        _push_log(remote, ref, old, new, False)
    governance.push_notes(repo, remote, io, result)
    governance.anchor_audit(repo, remote)
    if not remote.exists("HEAD"):
        head = repo.refs.head()
        first = head if head in targets else next((r for r in targets if r.startswith(HEADS)), None)
        if first:
            remote.put_new("HEAD", f"ref: {first}\n".encode())


def _records_to_push(repo: Repository, remote: Session, commits: list[bytes]) -> list:
    """The `dropped/` records of the dropped commits the stored parents of `commits` lead through, down to the
    kept commits behind them; a dropped commit the remote still holds is left alone (its history goes on there)."""
    out: dict[bytes, object] = {}
    stack = [p for c in commits for p in repo.commit(c).parents if p in repo.dropped]
    while stack:
        p = stack.pop()
        if p in out or remote.exists(obj_key(p)):
            continue
        rec = repo.dropped.get(p)
        out[p] = rec
        stack.extend(q for q in rec.parents if q in repo.dropped)
    return list(out.values())


def _upload_packs(repo: Repository, remote: Session, io: ThreadPoolExecutor, ordered: list[bytes], locs: dict,
                  result: SyncResult, progress: Progress) -> None:
    """Read and verify local frames, pack them (<= PACK_LIMIT) and upload each pack, then its .idx in order."""
    store = repo.store
    recent = RecentChunks(RECENT_LIMIT)  # `ordered` puts a delta just after its base: verified moments before

    def base(b: bytes) -> memoryview:
        raw = recent.get(b)
        return raw if raw is not None else store.get_chunk(b, keep=False)

    def read(c: bytes) -> tuple[bytes, bytes, int]:
        loc = locs[c]
        frame = store.read_frame(loc)   # sent as stored: an encrypted repository's remote holds the sealed frame
        try:
            raw = codec.decode(store.open_frame(c, frame), loc.raw_length, base)
        except codec.FrameError as exc:
            raise CorruptObject("chunk", c.hex(), "?", detail=f"local pack {loc.pack.hex()[:12]}: {exc}") from None
        got = store.scheme.chunk_id(raw)
        if got != c:
            raise CorruptObject("chunk", c.hex(), got.hex(), detail=f"local pack {loc.pack.hex()[:12]}")
        recent.put(c, raw)
        return c, frame, loc.raw_length

    in_flight: list = []

    def finish_oldest() -> None:
        future, pack_id, entries = in_flight.pop(0)
        future.result()
        idx = idx_bytes(pack_id, entries)
        remote.put_new(pack_key(pack_id, ".idx"), idx)
        cache_idx(repo, remote, pack_id, idx)
        result.packs += 1

    def upload(pack_id: bytes, data: bytearray, n: int) -> None:
        remote.put_new(pack_key(pack_id), data)
        progress.advance(n)

    def flush(batch: list) -> None:
        while len(in_flight) >= PACKS_IN_FLIGHT:   # before building the next: memory holds PACKS_IN_FLIGHT packs
            finish_oldest()
        pack_id, data, entries = pack_bytes(batch)
        n = sum(len(f) for _, f, _ in batch)
        batch.clear()                              # the frames are in `data` now
        in_flight.append((io.submit(upload, pack_id, data, n), pack_id, entries))

    batch: list = []
    size = 0
    try:
        for c, frame, raw_length in ordered_map(repo.pool, read, ordered):
            # + header and trailer
            if batch and size + len(frame) + ENTRY.size * (len(batch) + 1) + 32 > session.PACK_LIMIT:
                flush(batch)
                batch, size = [], 0
            batch.append((c, frame, raw_length))
            size += len(frame)
        if batch:
            flush(batch)
        while in_flight:
            finish_oldest()
    finally:
        for future, _, _ in in_flight:        # an error: let uploads under way end before reporting it
            future.cancel()
            try:
                future.result()
            except BaseException:  # noqa: BLE001 - the first error is the one reported
                pass


def _push_log(remote: Session, ref: str, old: bytes | None, new: bytes, forced: bool) -> None:
    now = datetime.now(timezone.utc)
    key = f"logs/push/{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{secrets.token_hex(6)}.json"
    body = {"user": whoami(), "host": socket.gethostname(), "time": now.timestamp(), "ref": ref,
            "old": old.hex() if old else None, "new": new.hex(), "forced": forced}
    remote.put_new(key, json.dumps(body, sort_keys=True).encode())
