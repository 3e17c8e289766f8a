"""Push, fetch, pull and clone: moving history between a repository and a remote (docs/design.md, "Remotes").

The remote holds the repository layout as keys. Everything goes up in dependency order — chunk packs (pack, then
its `.idx`), manifests, commits parents first, tag objects, then refs by compare-and-swap — so a remote that has
a commit has its whole history and data, and an interrupted push leaves only hash-named garbage.

Nothing from a remote is trusted: ref names are checked, ids must be 64 hex digits, every object is decompressed
with a bound and hashed against its id before it is written under its final name, and every chunk frame is decoded
and hashed before the pack holding it is sealed and indexed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import secrets
import shutil
import socket
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .. import codec, graph
from ..config import DEFAULT_CHUNK, FORMAT, HASH, VERSION
from ..errors import (CkstoreError, CorruptObject, MissingObject, RefError, RemoteError, RemoteNotFound,
                      RemotePreconditionFailed, RemoteUnavailable, UnknownRevision, UnsupportedFormat, UsageError)
from ..objects import Commit, Manifest, Tag, decode_object, hash_bytes
from ..parallel import ordered_map
from ..progress import NoProgress, Progress
from ..refs import ANY, check_ref_name, whoami
from ..store import Store
from ..store.fileio import write_atomic
from ..store.packs import ENTRY, Entry, PackFormatError, PackWriter, idx_bytes, pack_bytes, parse_idx
from . import remotes
from .base import Transport
from .remotes import RemoteSpec

if TYPE_CHECKING:
    from ..objects import FileRecipe, TensorEntry
    from ..repo import Repo

HEADS, TAGS = "refs/heads/", "refs/tags/"
IO_WORKERS = 4                  # requests in flight
PACK_LIMIT = 64 << 20           # packs pushed, and packs written by a fetch, are sealed at this size
PACKS_IN_FLIGHT = 2             # pushed packs being uploaded at once (each held in memory)
MAX_RUN = 8 << 20               # one range GET covers at most this many bytes of frames...
RUN_GAP = 16 << 10              # ...and skips over gaps up to this size between wanted frames
MAX_FRAME = 1 << 28             # an index entry claiming a bigger frame is not believed
ATTEMPTS = max(1, int(os.environ.get("CKSTORE_REMOTE_ATTEMPTS", "4") or 4))
BACKOFF = float(os.environ.get("CKSTORE_REMOTE_BACKOFF", "0.25") or 0.25)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PACK_KEY = re.compile(r"^packs/([0-9a-f]{2})/([0-9a-f]{64})\.(pack|idx)$")


class NonFastForward(RefError):
    hint = "fetch (or pull) first and build on the remote's commits, or pass --force to overwrite them"


class RemoteRefMoved(RefError):
    hint = "fetch and retry"


# ------------------------------------------------------------------------------------------------- results
@dataclass
class SyncResult:
    """What a push, fetch, pull, clone or on-demand fetch did."""

    action: str
    remote: str
    url: str
    refs: list[dict] = field(default_factory=list)      # {ref, old, new, status, forced}
    commits: int = 0
    objects: int = 0
    chunks: int = 0
    packs: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    logical_bytes: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def bytes_transferred(self) -> int:
        return self.bytes_sent + self.bytes_received

    @property
    def refs_updated(self) -> list[dict]:
        return [r for r in self.refs if r["status"] not in ("up-to-date", "ahead")]

    def to_dict(self) -> dict:
        return {**asdict(self), "bytes_transferred": self.bytes_transferred}

    def summary(self) -> str:
        moved = (f"{_human(self.bytes_sent)} sent" if self.action == "push"
                 else f"{_human(self.bytes_received)} received")
        return (f"{self.action} {self.remote} ({self.url}): {len(self.refs_updated)} refs updated, "
                f"{self.commits} commits, {self.objects} objects, {self.chunks} chunks in {self.packs} packs; "
                f"{moved} for {_human(self.logical_bytes)} logical")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# ------------------------------------------------------------------------------------------------- the remote
def obj_key(oid: bytes) -> str:
    h = oid.hex()
    return f"objects/{h[:2]}/{h[2:]}"


def pack_key(pack_id: bytes, suffix: str = ".pack") -> str:
    h = pack_id.hex()
    return f"packs/{h[:2]}/{h}{suffix}"


class _Remote:
    """A transport with retries of transient failures and a count of the bytes moved."""

    def __init__(self, transport: Transport, name: str) -> None:
        self.t, self.name, self.url = transport, name, transport.url
        self.sent = self.received = 0
        self._lock = threading.Lock()

    def _count(self, sent: int = 0, received: int = 0) -> None:
        with self._lock:
            self.sent += sent
            self.received += received

    def retry(self, what: str, key: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        delay, last = BACKOFF, None
        for attempt in range(ATTEMPTS):
            try:
                return fn(*args, **kwargs)
            except RemoteUnavailable as exc:
                last = exc
                if attempt + 1 < ATTEMPTS:
                    time.sleep(delay)
                    delay *= 3
        raise RemoteUnavailable(f"{what} {key!r} on {self.url} still failing after {ATTEMPTS} attempts: {last}",
                                url=self.url, key=key,
                                hint="check the network and the remote's address (and --endpoint-url), then retry; "
                                     "what was already transferred is kept") from last

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        data = self.retry("GET", key, self.t.get, key, start, end)
        self._count(received=len(data))
        return data

    def get_opt(self, key: str) -> bytes | None:
        try:
            return self.get(key)
        except RemoteNotFound:
            return None

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        try:
            data, etag = self.retry("GET", key, self.t.get_with_etag, key)
        except RemoteNotFound:
            return None
        self._count(received=len(data))
        return data, etag

    def exists(self, key: str) -> bool:
        return self.retry("HEAD", key, self.t.exists, key)

    def list(self, prefix: str) -> list[str]:
        return self.retry("LIST", prefix, lambda: list(self.t.list(prefix)))

    def put_new(self, key: str, data: bytes | memoryview) -> bool:
        """Create a hash-named key if absent: True if written, False if it was there (a retried put that landed)."""
        def attempt() -> None:
            self._count(sent=len(data))
            self.t.put(key, data, if_absent=True)
        try:
            self.retry("PUT", key, attempt)
            return True
        except RemotePreconditionFailed:
            return False

    def put_cas(self, key: str, data: bytes, etag: str | None) -> None:
        """One conditional put (no retry: the caller re-reads and decides)."""
        self._count(sent=len(data))
        if etag is None:
            self.t.put(key, data, if_absent=True)
        else:
            self.t.put(key, data, if_match=etag)


def _open(spec: RemoteSpec, *, create: bool) -> Transport:
    from . import open_transport
    opts: dict[str, Any] = spec.transport_options()
    scheme = spec.url.split("://", 1)[0].lower() if "://" in spec.url else ""
    if scheme in ("s3", "s3a"):
        opts.setdefault("max_retries", 2)
        opts.setdefault("retry_timeout", 30.0)
    elif scheme in ("", "file") and create:
        opts["create"] = True
    return open_transport(spec.url, **opts)


def _config(remote: _Remote, create_from: bytes | None = None) -> dict:
    """The remote's config (created if-absent from `create_from` on an empty remote); other formats refused."""
    data = remote.get_opt("config")
    if data is None and create_from is not None:
        remote.put_new("config", create_from)
        data = remote.get_opt("config")
    if data is None:
        raise RemoteNotFound(f"{remote.url} is not a ckstore remote: it has no config", url=remote.url, key="config",
                             hint="check the URL, or push to it first")
    try:
        raw = json.loads(data)
    except ValueError:
        raw = None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise UnsupportedFormat(f"{remote.url}: its config is not a ckstore config", hint="check the URL")
    if raw.get("version") != VERSION:
        raise UnsupportedFormat(f"remote {remote.url} has repository format version {raw.get('version')!r} "
                                f"(this ckstore reads version {VERSION})")
    if raw.get("hash") != HASH:
        raise UnsupportedFormat(f"remote {remote.url} uses hash {raw.get('hash')!r} (this ckstore uses {HASH})")
    return raw


def _parse_id(data: bytes) -> bytes | None:
    text = data.decode("ascii", "replace").strip()
    return bytes.fromhex(text) if _HEX64.match(text) else None


def _read_ref(remote: _Remote, key: str) -> tuple[bytes | None, str | None]:
    got = remote.get_with_etag(key)
    if got is None:
        return None, None
    value = _parse_id(got[0])
    if value is None:
        raise RemoteError(f"{remote.url}: ref {key} is damaged (not a 64-digit id)", url=remote.url, key=key,
                          hint="repair or delete that key on the remote")
    return value, got[1]


def _remote_refs(remote: _Remote, io: ThreadPoolExecutor, prefix: str, warnings: list[str]) -> dict[str, bytes]:
    """Refs under `prefix` ("refs/heads/" or "refs/tags/"): {short name: id}, names and ids checked."""
    names = []
    for key in remote.list(prefix.rstrip("/")):
        name = key[len(prefix):]
        try:
            check_ref_name(name)
        except UsageError:
            warnings.append(f"ignored remote ref with an invalid name: {key[:200]!r}")
            continue
        names.append(name)
    out = {}
    for name, data in zip(names, io.map(lambda n: remote.get_opt(prefix + n), names)):
        value = _parse_id(data) if data is not None else None
        if value is None:
            if data is not None:
                warnings.append(f"ignored remote ref {prefix + name}: not a 64-digit id")
            continue
        out[name] = value
    return out


def _remote_head(remote: _Remote) -> str | None:
    data = remote.get_opt("HEAD")
    if not data:
        return None
    text = data.decode("utf-8", "replace").strip()
    if text.startswith("ref: " + HEADS):
        try:
            return check_ref_name(text[5 + len(HEADS):])
        except UsageError:
            return None
    return None


def _load_index(repo: Repo, remote: _Remote, io: ThreadPoolExecutor, warnings: list[str]
                ) -> dict[bytes, tuple[bytes, Entry]]:
    """chunk id -> (pack id, entry) over the remote's `.idx` files; each is cached locally after its download."""
    packs, idxs = set(), []
    for key in remote.list("packs"):
        m = _PACK_KEY.match(key)
        if not m or m.group(1) != m.group(2)[:2]:
            continue
        if m.group(3) == "idx":
            idxs.append(bytes.fromhex(m.group(2)))
        else:
            packs.add(bytes.fromhex(m.group(2)))
    cache = remotes.cache_dir(repo.dir, remote.name)

    def load(pack_id: bytes) -> list[Entry] | None:
        path = cache / f"{pack_id.hex()}.idx"
        try:
            pid, entries = parse_idx(path.read_bytes())
            if pid == pack_id:
                return entries
        except (OSError, PackFormatError):
            pass
        data = remote.get(pack_key(pack_id, ".idx"))
        try:
            pid, entries = parse_idx(data)
        except PackFormatError as exc:
            warnings.append(f"ignored damaged index packs/{pack_id.hex()}.idx on the remote: {exc}")
            return None
        if pid != pack_id:
            warnings.append(f"ignored index {pack_id.hex()}.idx on the remote: it names another pack")
            return None
        cache.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, repo.store.tmp_dir)
        return entries

    out: dict[bytes, tuple[bytes, Entry]] = {}
    wanted = [p for p in idxs if p in packs]
    for pack_id, entries in zip(wanted, io.map(load, wanted)):
        for e in entries or ():
            if e.offset >= 8 and 0 < e.length <= MAX_FRAME and e.raw_length <= MAX_FRAME:
                out.setdefault(e.chunk, (pack_id, e))
    return out


def _cache_idx(repo: Repo, remote: _Remote, pack_id: bytes, data: bytes) -> None:
    cache = remotes.cache_dir(repo.dir, remote.name)
    cache.mkdir(parents=True, exist_ok=True)
    write_atomic(cache / f"{pack_id.hex()}.idx", data, repo.store.tmp_dir)


# ------------------------------------------------------------------------------------------------- helpers
def _topo(commits: set[bytes], parents: Callable[[bytes], tuple[bytes, ...]]) -> list[bytes]:
    """`commits` ordered parents first (within the set)."""
    out, done = [], set()
    for start in sorted(commits):
        stack = [(start, False)]
        while stack:
            oid, expanded = stack.pop()
            if oid in done:
                continue
            if expanded:
                done.add(oid)
                out.append(oid)
                continue
            stack.append((oid, True))
            stack.extend((p, False) for p in parents(oid) if p in commits and p not in done)
    return out


def _tensor_matches(t: TensorEntry, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(t.name, g) or fnmatch.fnmatchcase(f"{t.file}:{t.name}", g) for g in globs)


def manifest_chunks(manifest: Manifest, partial: dict | None = None) -> list[bytes]:
    """The chunks of a manifest in file order, or only those of the tensors a partial filter selects."""
    if partial is not None:
        return list(dict.fromkeys(c for t in manifest.tensors if _tensor_matches(t, partial["tensors"])
                                  for c in t.chunks))
    return list(dict.fromkeys(_file_chunks(manifest, manifest.files)))


def _file_chunks(manifest: Manifest, files: Iterable[FileRecipe]) -> Iterable[bytes]:
    for f in files:
        for seg in f.segments:
            if seg[0] == 1:
                yield from seg[3]
            elif seg[0] == 2:
                yield from manifest.tensors[seg[1]].chunks


def parse_filter(filters: str | list[str] | None, metadata_only: bool = False) -> dict | None:
    """--filter 'tensors=GLOB[,GLOB...]' (repeatable) and --metadata-only -> the `partial` setting of a remote."""
    if isinstance(filters, str):
        filters = [filters]
    if metadata_only:
        if filters:
            raise UsageError("--metadata-only and --filter exclude each other")
        return {"tensors": []}
    if not filters:
        return None
    globs: list[str] = []
    for f in filters:
        kind, sep, value = f.partition("=")
        if kind.strip() != "tensors" or not sep or not value.strip():
            raise UsageError(f"unsupported filter {f!r}", hint="use --filter 'tensors=GLOB' (e.g. 'tensors=*.embed*')")
        globs += [g.strip() for g in value.split(",") if g.strip()]
    return {"tensors": globs}


def _verified_object(oid: bytes, data: bytes, where: str) -> Any:
    try:
        return decode_object(Store.decompress_object(oid, data), oid)
    except CorruptObject as exc:
        raise CorruptObject("object", oid.hex(), exc.got, detail=f"from {where}") from None


def _missing(what: str, oid: bytes, url: str) -> MissingObject:
    exc = MissingObject(what, oid.hex())
    exc.hint = f"the remote {url} does not have it: it may be damaged, or a push to it is under way; retry later"
    return exc


# ------------------------------------------------------------------------------------------------- push
def push(repo: Repo, remote_name: str | None = None, branches: list[str] | None = None, *, all: bool = False,
         tags: bool = False, force: bool = False, progress: Progress | None = None,
         transport: Transport | None = None) -> SyncResult:
    """Upload branches (and tags) to a remote, refusing a non-fast-forward unless `force`."""
    spec = remotes.get(repo.dir, remote_name)
    remote = _Remote(transport or _open(spec, create=True), spec.name)
    result = SyncResult("push", spec.name, remote.url)
    io = ThreadPoolExecutor(IO_WORKERS, thread_name_prefix="ckstore-io")
    try:
        _push(repo, remote, io, result, _push_targets(repo, branches, all, tags), force, progress or NoProgress())
    finally:
        io.shutdown(wait=True)
        result.bytes_sent, result.bytes_received = remote.sent, remote.received
        if transport is None:
            remote.t.close()
    return result


def _push_targets(repo: Repo, branches: list[str] | None, all_branches: bool, tags: bool) -> dict[str, bytes]:
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
    if not targets:
        raise UsageError("nothing to push", hint="name a branch, or pass --all or --tags")
    return targets


def _push(repo: Repo, remote: _Remote, io: ThreadPoolExecutor, result: SyncResult, targets: dict[str, bytes],
          force: bool, progress: Progress) -> None:
    store = repo.store
    _config(remote, create_from=(repo.dir / "config").read_bytes())

    # 1. what the remote refs hold now; refuse non-fast-forwards before moving any data
    current = dict(zip(targets, io.map(lambda r: _read_ref(remote, r), targets)))
    on_remote: set[bytes] = set()
    plan = []
    for ref, new in targets.items():
        old, etag = current[ref]
        new_commit = repo._peel(new)
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
                on_remote |= graph.ancestors(old, repo._parents)
            if not (known and graph.is_ancestor(old, new_commit, repo._parents)):
                if not force:
                    raise NonFastForward(
                        f"push of {ref.removeprefix(HEADS)} to {remote.name} refused: the remote has "
                        f"{old.hex()[:12]}, which is not an ancestor of {new.hex()[:12]} (non-fast-forward)")
                forced = True
        plan.append((ref, old, etag, new, new_commit, forced))
    if not plan:
        return

    # 2. commits the remote lacks (walk from each tip, stopping at commits it has)
    new_commits: set[bytes] = set()
    frontier = list(dict.fromkeys(p[4] for p in plan))
    seen: set[bytes] = set()
    while frontier:
        frontier = [c for c in dict.fromkeys(frontier) if c not in seen and c not in on_remote]
        seen.update(frontier)
        has = list(io.map(lambda c: remote.exists(obj_key(c)), frontier))
        nxt = []
        for c, h in zip(frontier, has):
            if not h:
                new_commits.add(c)
                nxt.extend(repo._parents(c))
        frontier = nxt
    order = _topo(new_commits, repo._parents)
    manifests: dict[bytes, Manifest] = {}
    for c in order:
        mid = repo._commit(c).manifest
        if mid not in manifests:
            m = store.get_object(mid)
            if not isinstance(m, Manifest):
                raise CorruptObject("manifest", mid.hex(), "?",
                                    detail=f"commit {c.hex()[:12]} names a {type(m).__name__}")
            manifests[mid] = m
    result.commits = len(order)
    result.logical_bytes = sum(m.logical_bytes() for m in manifests.values())

    # 3. chunks the remote lacks, plus the delta bases they need
    needed = list(dict.fromkeys(c for m in manifests.values() for c in manifest_chunks(m)))
    ridx = _load_index(repo, remote, io, result.warnings) if needed else {}
    missing = [c for c in needed if c not in ridx]
    locs = store.index.get_many(missing)
    depth: dict[bytes, int] = {}

    def base_of(c: bytes) -> bytes | None:
        loc = locs.get(c) or store.index.get(c)
        if loc is None:
            exc = MissingObject("chunk", c.hex())
            exc.hint = "neither this repository nor the remote has it (a partial clone?); fetch it first"
            raise exc
        locs[c] = loc
        return codec.frame_base(os.pread(store._fd(loc.pack), min(loc.length, codec.HEADER.size + 32), loc.offset))

    for c in missing:                   # depth = deltas to decode down to a frame the remote can resolve
        chain, x = [], c
        while x not in depth:
            if len(chain) > 64:
                raise CorruptObject("chunk", c.hex(), "?", detail="delta chain too deep or circular")
            chain.append(x)
            base = base_of(x)
            if base is None or base in ridx:
                depth[chain.pop()] = 0
                break
            x = base
        d = depth[x]
        for y in reversed(chain):
            d += 1
            depth[y] = d
    ordered = sorted(depth, key=lambda c: (depth[c], c))     # bases before the frames that name them
    result.chunks = len(ordered)
    progress.begin("push", sum(locs[c].length for c in ordered))
    try:
        _upload_packs(repo, remote, io, ordered, locs, result, progress)
    finally:
        progress.end()

    # 4. objects: manifests, then commits parents first, then tag objects
    def put_object(oid: bytes) -> bool:
        data = store.object_path(oid).read_bytes()
        _verified_object(oid, data, "the local store")
        return remote.put_new(obj_key(oid), data)

    result.objects += sum(io.map(put_object, list(manifests)))
    for c in order:
        result.objects += put_object(c)
    for ref, old, etag, new, new_commit, forced in plan:
        if new != new_commit and not remote.exists(obj_key(new)):
            result.objects += put_object(new)

    # 5. refs by compare-and-swap; then the local tracking ref, the audit log and the remote's push log
    for ref, old, etag, new, new_commit, forced in plan:
        _move_ref(remote, ref, new, old, etag)
        status = "created" if old is None else ("forced" if forced else "updated")
        result.refs.append({"ref": ref, "old": old.hex() if old else None, "new": new.hex(), "status": status,
                            "forced": forced})
        action = "push-force" if forced else "push"
        message = f"{remote.url} {ref}"
        if ref.startswith(HEADS):
            repo.refs.update(f"refs/remotes/{remote.name}/{ref.removeprefix(HEADS)}", new, ANY, action=action,
                             message=message)
        else:
            repo.refs.audit.append(action, ref, old, new, message)
        _push_log(remote, ref, old, new, forced)
    if not remote.exists("HEAD"):
        head = repo.refs.head()
        first = head if head in targets else next((r for r in targets if r.startswith(HEADS)), None)
        if first:
            remote.put_new("HEAD", f"ref: {first}\n".encode())


def _upload_packs(repo: Repo, remote: _Remote, io: ThreadPoolExecutor, ordered: list[bytes], locs: dict,
                  result: SyncResult, progress: Progress) -> None:
    """Read and verify local frames, pack them (<= PACK_LIMIT) and upload each pack, then its .idx in order."""
    store = repo.store

    def read(c: bytes) -> tuple[bytes, bytes, int]:
        loc = locs[c]
        frame = store.read_frame(loc)
        try:
            raw = codec.decode(frame, loc.raw_length, store.get_chunk)
        except codec.FrameError as exc:
            raise CorruptObject("chunk", c.hex(), "?", detail=f"local pack {loc.pack.hex()[:12]}: {exc}") from None
        got = hash_bytes(raw)
        if got != c:
            raise CorruptObject("chunk", c.hex(), got.hex(), detail=f"local pack {loc.pack.hex()[:12]}")
        return c, frame, loc.raw_length

    in_flight: list = []

    def finish_oldest() -> None:
        future, pack_id, entries = in_flight.pop(0)
        future.result()
        idx = idx_bytes(pack_id, entries)
        remote.put_new(pack_key(pack_id, ".idx"), idx)
        _cache_idx(repo, remote, pack_id, idx)
        result.packs += 1

    def upload(pack_id: bytes, data: bytes, n: int) -> None:
        remote.put_new(pack_key(pack_id), data)
        progress.advance(n)

    def flush(batch: list) -> None:
        pack_id, data, entries = pack_bytes(batch)
        n = sum(len(f) for _, f, _ in batch)
        while len(in_flight) >= PACKS_IN_FLIGHT:
            finish_oldest()
        in_flight.append((io.submit(upload, pack_id, data, n), pack_id, entries))

    batch: list = []
    size = 0
    try:
        for c, frame, raw_length in ordered_map(repo.pool, read, ordered):
            if batch and size + len(frame) + ENTRY.size * (len(batch) + 1) + 32 > PACK_LIMIT:   # + header, trailer
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


def _move_ref(remote: _Remote, ref: str, new: bytes, expected: bytes | None, etag: str | None) -> None:
    data = (new.hex() + "\n").encode()
    delay = BACKOFF
    for attempt in range(ATTEMPTS):
        try:
            remote.put_cas(ref, data, etag)
            return
        except RemotePreconditionFailed:
            cur, _ = _read_ref(remote, ref)
            if cur == new:
                return                      # our write landed; its reply was lost and the retry was refused
            raise RemoteRefMoved(f"the remote ref moved during the push: fetch and retry ({ref} on {remote.url} "
                                 f"is now {cur.hex()[:12] if cur else 'gone'})") from None
        except RemoteUnavailable as exc:
            if attempt + 1 == ATTEMPTS:
                raise RemoteUnavailable(f"cannot update {ref} on {remote.url}: {exc}", url=remote.url, key=ref,
                                        hint="retry the push; what was uploaded is kept") from exc
            time.sleep(delay)
            delay *= 3
            cur, cur_etag = _read_ref(remote, ref)
            if cur == new:
                return
            if cur != expected:
                raise RemoteRefMoved(f"the remote ref moved during the push: fetch and retry ({ref} on "
                                     f"{remote.url})") from None
            etag = cur_etag


def _push_log(remote: _Remote, ref: str, old: bytes | None, new: bytes, forced: bool) -> None:
    now = datetime.now(timezone.utc)
    key = f"logs/push/{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{secrets.token_hex(6)}.json"
    body = {"user": whoami(), "host": socket.gethostname(), "time": now.timestamp(), "ref": ref,
            "old": old.hex() if old else None, "new": new.hex(), "forced": forced}
    remote.put_new(key, json.dumps(body, sort_keys=True).encode())


# ------------------------------------------------------------------------------------------------- fetch
@dataclass
class _Fetched:
    heads: dict[str, bytes]
    tags: dict[str, bytes]
    head: str | None


def fetch(repo: Repo, remote_name: str | None = None, *, progress: Progress | None = None,
          transport: Transport | None = None) -> SyncResult:
    """Download what the remote has and this repository lacks; move refs/remotes/<name>/*."""
    spec = remotes.get(repo.dir, remote_name)
    remote = _Remote(transport or _open(spec, create=False), spec.name)
    try:
        return _fetch_with(repo, spec, remote, progress or NoProgress())[0]
    finally:
        if transport is None:
            remote.t.close()


def _fetch_with(repo: Repo, spec: RemoteSpec, remote: _Remote, progress: Progress,
                action: str = "fetch") -> tuple[SyncResult, _Fetched]:
    result = SyncResult(action, spec.name, remote.url)
    io = ThreadPoolExecutor(IO_WORKERS, thread_name_prefix="ckstore-io")
    try:
        fetched = _fetch(repo, remote, io, spec.partial, result, progress)
    finally:
        io.shutdown(wait=True)
        result.bytes_sent, result.bytes_received = remote.sent, remote.received
    return result, fetched


def _fetch(repo: Repo, remote: _Remote, io: ThreadPoolExecutor, partial: dict | None, result: SyncResult,
           progress: Progress) -> _Fetched:
    store = repo.store
    _config(remote)
    heads = _remote_refs(remote, io, HEADS, result.warnings)
    tags = _remote_refs(remote, io, TAGS, result.warnings)
    head = _remote_head(remote)

    def get_object(oid: bytes) -> tuple[bytes, Any]:
        try:
            data = remote.get(obj_key(oid))
        except RemoteNotFound:
            raise _missing("object", oid, remote.url) from None
        return data, _verified_object(oid, data, remote.url)

    # walk from every remote tip, getting the commits and tag objects this repository lacks
    fetched: dict[bytes, tuple[bytes, Any]] = {}
    expect: dict[bytes, tuple] = {}
    for oid in heads.values():
        expect.setdefault(oid, (Commit,))
    for oid in tags.values():
        expect.setdefault(oid, (Commit, Tag))
    frontier = list(expect)
    while frontier:
        todo = [o for o in dict.fromkeys(frontier) if o not in fetched and not store.has_object(o)]
        frontier = []
        for oid, (data, obj) in zip(todo, io.map(get_object, todo)):
            if not isinstance(obj, expect.get(oid, (Commit,))):
                raise CorruptObject("object", oid.hex(), oid.hex(),
                                    detail=f"on {remote.url}: expected a commit or tag, found a {type(obj).__name__}")
            fetched[oid] = (data, obj)
            nxt = [obj.target] if isinstance(obj, Tag) else list(obj.parents)
            for p in nxt:
                expect.setdefault(p, (Commit, Tag) if isinstance(obj, Tag) else (Commit,))
            frontier += nxt
    commits = {o for o, (_, obj) in fetched.items() if isinstance(obj, Commit)}
    mids = list(dict.fromkeys(fetched[c][1].manifest for c in _topo(commits, lambda o: fetched[o][1].parents)))
    new_mids = [m for m in mids if not store.has_object(m)]
    manifests: dict[bytes, tuple[bytes, Any]] = dict(zip(new_mids, io.map(get_object, new_mids)))
    for mid, (_, obj) in manifests.items():
        if not isinstance(obj, Manifest):
            raise CorruptObject("object", mid.hex(), mid.hex(), detail=f"on {remote.url}: expected a manifest")

    def manifest_of(c: bytes) -> Manifest:
        mid = fetched[c][1].manifest
        return manifests[mid][1] if mid in manifests else store.get_object(mid)

    # the chunks they need (a partial remote: only the selected tensors of the branch tips)
    if partial is None:
        wanted_from = [manifest_of(c) for c in _topo(commits, lambda o: fetched[o][1].parents)]
    else:
        wanted_from = [manifest_of(c) for c in dict.fromkeys(heads.values()) if c in commits]
    wanted = list(dict.fromkeys(c for m in wanted_from for c in manifest_chunks(m, partial)))
    result.commits = len(commits)
    result.logical_bytes = sum(m.logical_bytes() for m in {fetched[c][1].manifest: manifest_of(c)
                                                           for c in commits}.values())
    _fetch_chunks(repo, remote, io, wanted, result, progress)

    # objects under their final names: manifests, commits parents first, tag objects
    def write(oid: bytes, data: bytes) -> None:
        if write_atomic(store.object_path(oid), data, store.tmp_dir, exclusive=True):
            result.objects += 1

    for mid, (data, _) in manifests.items():
        write(mid, data)
    for c in _topo(commits, lambda o: fetched[o][1].parents):
        write(c, fetched[c][0])
    for oid, (data, obj) in fetched.items():
        if isinstance(obj, Tag):
            write(oid, data)

    # refs: remote-tracking branches move; tags are created when absent, never moved
    for name, oid in sorted(heads.items()):
        ref = f"refs/remotes/{remote.name}/{name}"
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
    return _Fetched(heads, tags, head)


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


class _PackSink:
    """Verified frames into a pack in tmp/, sealed (and indexed) at PACK_LIMIT. The verified raw bytes of the
    unsealed pack's chunks are kept (bounded) so that delta frames naming them decode before the pack is sealed."""

    RAW_LIMIT = 256 << 20

    def __init__(self, store: Store) -> None:
        self.store = store
        self.current: PackWriter | None = None
        self.pending: dict[bytes, memoryview] = {}
        self.raw_bytes = 0
        self.packs = 0

    def chunk(self, chunk: bytes) -> memoryview:
        """A verified chunk: from the unsealed pack, or the store."""
        raw = self.pending.get(chunk)
        return raw if raw is not None else self.store.get_chunk(chunk)

    def has(self, chunk: bytes) -> bool:
        return chunk in self.pending or self.store.has_chunk(chunk)

    def add(self, chunk: bytes, frame: bytes | memoryview, raw_length: int, raw: memoryview) -> bool:
        if self.has(chunk):
            return False
        if self.current is None:
            self.store.tmp_dir.mkdir(parents=True, exist_ok=True)
            self.current = PackWriter(self.store.packs_dir, self.store.tmp_dir)
        self.current.add(chunk, bytes(frame), raw_length)
        self.pending[chunk] = raw
        self.raw_bytes += len(raw)
        if self.current.size >= PACK_LIMIT or self.raw_bytes >= self.RAW_LIMIT:
            self.seal()
        return True

    def seal(self) -> None:
        if self.current is not None:
            pack_id, entries = self.current.seal()
            self.current = None
            self.store.index.add_packs([(pack_id, entries)])
            self.pending.clear()
            self.raw_bytes = 0
            self.packs += 1

    def abort(self) -> None:
        if self.current is not None:
            self.current.abort()
            self.current = None
            self.pending.clear()
            self.raw_bytes = 0


def _fetch_chunks(repo: Repo, remote: _Remote, io: ThreadPoolExecutor, wanted: list[bytes], result: SyncResult,
                  progress: Progress) -> None:
    """Fetch the `wanted` chunks the local index lacks, and the delta bases they need; all verified."""
    store = repo.store
    have = store.index.get_many(wanted)
    todo = [c for c in wanted if c not in have]
    if not todo:
        return
    ridx = _load_index(repo, remote, io, result.warnings)
    sink = _PackSink(store)
    requested: set[bytes] = set()
    deferred: list[tuple[bytes, bytes, int, bytes]] = []     # delta frames waiting for their base
    url = remote.url

    def fetch_run(run: _Run) -> list[tuple[bytes, Entry, bytes, bytes | None, memoryview | None]]:
        key = pack_key(run.pack)
        try:
            data = remote.get(key, run.start, run.end)
        except RemoteNotFound:
            raise _missing("pack", run.pack, url) from None
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
        result.chunks += sink.add(c, frame, raw_length, raw)
        return True

    try:
        for _round in range(64):
            locs = {}
            for c in dict.fromkeys(todo):
                if c in requested or sink.has(c):
                    continue
                hit = ridx.get(c)
                if hit is None:
                    raise _missing("chunk", c, url)
                locs[c] = hit
            requested.update(locs)
            runs = _coalesce(locs)
            progress.begin("fetch", sum(r.end - r.start for r in runs))
            bases: list[bytes] = []
            try:
                for frames in ordered_map(io, fetch_run, runs, window=2 * IO_WORKERS):
                    for c, e, frame, base, raw in frames:
                        if base is None:
                            result.chunks += sink.add(c, frame, e.raw_length, raw)
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


# ------------------------------------------------------------------------------------------------- pull, clone
def pull(repo: Repo, remote_name: str | None = None, branch: str | None = None, *, force: bool = False,
         progress: Progress | None = None, transport: Transport | None = None) -> SyncResult:
    """Fetch, then fast-forward the local branch to the remote's (`force`: reset it; audited)."""
    spec = remotes.get(repo.dir, remote_name)
    remote = _Remote(transport or _open(spec, create=False), spec.name)
    try:
        result, _ = _fetch_with(repo, spec, remote, progress or NoProgress(), action="pull")
    finally:
        if transport is None:
            remote.t.close()
    name = check_ref_name(branch or repo.head_branch())
    theirs = repo.refs.read(f"refs/remotes/{spec.name}/{name}")
    if theirs is None:
        raise UnknownRevision(f"remote {spec.name} has no branch {name!r}", hint="see `ckstore branch` and the remote")
    ref = HEADS + name
    with repo.refs.locked(ref) as (current, set_ref):
        status = "updated"
        if current == theirs:
            status = "up-to-date"
        elif current is None:
            set_ref(theirs, "pull", f"{spec.name}/{name}")
            status = "created"
        elif graph.is_ancestor(current, theirs, repo._parents):
            set_ref(theirs, "pull", f"{spec.name}/{name}")
        elif graph.is_ancestor(theirs, current, repo._parents):
            status = "ahead"
        elif force:
            set_ref(theirs, "pull-force", f"{spec.name}/{name} (was {current.hex()})")
            status = "forced"
        else:
            raise NonFastForward(f"{name} and {spec.name}/{name} have diverged: {current.hex()[:12]} is not an "
                                 f"ancestor of {theirs.hex()[:12]}, so pull cannot fast-forward",
                                 hint="pass --force to reset the branch to the remote's (the audit log keeps the "
                                      "old tip), or push your commits to another branch first")
    result.refs.append({"ref": ref, "old": current.hex() if current else None, "new": theirs.hex(),
                        "status": status, "forced": status == "forced"})
    return result


def default_clone_dir(url: str) -> str:
    path = url.split("://", 1)[-1].rstrip("/")
    name = path.rsplit("/", 1)[-1] or "repo"
    return name.removesuffix(".ckstore") or "repo"


def clone(url: str, dest: str | os.PathLike | None = None, *, filter: str | list[str] | None = None,
          metadata_only: bool = False, endpoint_url: str | None = None, region: str | None = None,
          name: str = "origin", progress: Progress | None = None, transport: Transport | None = None) -> Repo:
    """A new repository at `dest` holding the remote's history; `repo.last_transfer` says what moved."""
    from ..repo import Repo
    partial = parse_filter(filter, metadata_only)
    spec = RemoteSpec(remotes.check_remote_name(name), remotes.normalize_url(url), endpoint_url or None,
                      region or None, partial)
    remote = _Remote(transport or _open(spec, create=False), spec.name)
    try:
        cfg = _config(remote)                  # before anything is created: a bad URL leaves nothing behind
        target = Path(dest if dest is not None else default_clone_dir(spec.url)).resolve()
        created = not target.exists()
        chunk = cfg.get("chunk_size") if isinstance(cfg.get("chunk_size"), int) else DEFAULT_CHUNK
        required = (cfg.get("schema") or {}).get("required") if isinstance(cfg.get("schema"), dict) else None
        repo = Repo.init(target, chunk_size=max(chunk, 4096), required=required or None)
        try:
            remotes.add(repo.dir, name, spec.url, endpoint_url=spec.endpoint_url, region=spec.region,
                        partial=partial)
            result, fetched = _fetch_with(repo, spec, remote, progress or NoProgress(), action="clone")
            for branch, oid in sorted(fetched.heads.items()):
                repo.refs.update(HEADS + branch, oid, None, action="clone", message=spec.url)
                result.refs.append({"ref": HEADS + branch, "old": None, "new": oid.hex(), "status": "created",
                                    "forced": False})
            head = fetched.head if fetched.head in fetched.heads else (
                "main" if "main" in fetched.heads else next(iter(sorted(fetched.heads)), None))
            if head:
                repo.refs.set_head(HEADS + head)
        except BaseException:
            repo.close()
            shutil.rmtree(target if created else repo.dir, ignore_errors=True)
            raise
    finally:
        if transport is None:
            remote.t.close()
    repo.last_transfer = result
    return repo


# ------------------------------------------------------------------------------------------------- on demand
def ensure_chunks(repo: Repo, manifest: Manifest, *, files: list[FileRecipe] | None = None,
                  tensors: list[TensorEntry] | None = None, include: list[str] | None = None,
                  progress: Progress | None = None) -> SyncResult | None:
    """Partial clones: fetch, in one batch, the chunks these files (default: all, or those matching `include`) or
    tensors need and lack here. None when nothing was missing or no partial remote can supply it (reading then
    reports the missing chunk)."""
    if files is None and include:
        from ..checkout import select
        files = select(manifest, include)
    if tensors is not None:
        wanted = list(dict.fromkeys(c for t in tensors for c in t.chunks))
    else:
        wanted = list(dict.fromkeys(_file_chunks(manifest, manifest.files if files is None else files)))
    have = repo.store.index.get_many(wanted)
    if len(have) == len(wanted):
        return None
    known = remotes.load(repo.dir)
    partial = sorted((r for r in known.values() if r.partial is not None), key=lambda r: r.name != "origin")
    if not partial:
        return None
    spec = partial[0]
    remote = _Remote(_open(spec, create=False), spec.name)
    result = SyncResult("fetch-missing", spec.name, remote.url)
    io = ThreadPoolExecutor(IO_WORKERS, thread_name_prefix="ckstore-io")
    try:
        missing = [c for c in wanted if c not in have]
        _fetch_chunks(repo, remote, io, missing, result, progress or NoProgress())
        result.logical_bytes = sum(loc.raw_length for loc in repo.store.index.get_many(missing).values())
    finally:
        io.shutdown(wait=True)
        result.bytes_sent, result.bytes_received = remote.sent, remote.received
        remote.t.close()
    return result


# ------------------------------------------------------------------------------------------------- remotes
def remote_remove(repo: Repo, name: str) -> RemoteSpec:
    spec = remotes.remove(repo.dir, name)
    for ref, oid in repo.refs.list(f"refs/remotes/{spec.name}/").items():
        repo.refs.update(ref, None, oid, action="remote-remove", message=spec.url)
    return spec
