"""The cold tier: `archive` moves the chunks of old commits to a cold remote, `restore_archive` brings them back.

archive(commits, to=REMOTE):
  1. push `refs/archive/<id>` for each commit to the cold remote (the push machinery: packs, objects, history;
     a remote holds whole histories, so ancestors it lacks go too); the refs are the cold remote's roots;
  2. verify there: each ref names its commit, every commit and manifest object hashes to its id, and every frame
     the commits need (with the delta bases those frames name) is read back whole-pack, the pack hashed against
     its name and each frame decoded and hashed against its chunk id. A failure is an error; nothing is recorded;
  3. write `archived/<id>` records: the commits keep their commit and manifest objects here (log, show, find,
     diff of metadata keep working) but `engine.reach` no longer counts their chunks, so the next local gc frees
     the chunks only they use. Reads of them fetch on demand from the cold remote (`on_demand.Tiered`).
restore_archive(commits): fetch their missing chunks back (verified) and remove the records.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from ..engine.reach import mark, roots
from ..engine.repository import Repository
from ..errors import CorruptObject, MissingObject, UsageError
from ..model import codec, graph
from ..model.objects import Commit, Manifest
from ..model.progress import NoProgress, Progress
from ..results import SyncResult, human_bytes
from ..storage import remotes
from ..storage.records import Archived
from ..transport.base import Transport
from .check import check_pack_data
from .chunks import fetch_chunks
from .push import push_refs
from .remote_view import ARCHIVE
from .remote_refs import read_ref
from .session import Session, io_pool, load_index, obj_key, open_spec, pack_key, verified_object


@dataclass
class ArchiveResult:
    """What an archive (or restore) did: the commits, the remote, and the chunks and bytes concerned."""

    action: str
    remote: str
    url: str
    commits: list[str] = field(default_factory=list)
    chunks: int = 0             # archive: chunks only these commits use here (the next gc frees them)
    bytes_local: int = 0        # ...their stored bytes here; restore: bytes fetched back
    verified_packs: int = 0
    verified_chunks: int = 0
    push: SyncResult | None = None

    def to_dict(self) -> dict:
        """JSON-ready data."""
        d = asdict(self)
        d["push"] = self.push.to_dict() if self.push else None
        return d

    def summary(self) -> str:
        """One line of what happened."""
        if self.action == "restore-archive":
            return (f"restored {len(self.commits)} commits from {self.remote} ({self.url}): {self.chunks} chunks, "
                    f"{human_bytes(self.bytes_local)} fetched")
        sent = human_bytes(self.push.bytes_sent if self.push else 0)
        return (f"archived {len(self.commits)} commits to {self.remote} ({self.url}): {sent} sent, "
                f"{self.verified_chunks} chunks verified in {self.verified_packs} packs; {self.chunks} chunks "
                f"({human_bytes(self.bytes_local)}) are now only needed there: `ckstore gc` frees them here")


def select_commits(repo: Repository, revs: str | list[str] | None, older_than: float | None,
                   now: float | None = None) -> list[bytes]:
    """The commits a REV-RANGE ("A..B": what B reaches and A does not; a single rev: that commit) or an age names
    (every commit the refs reach made more than `older_than` seconds ago), not archived yet."""
    if (revs is None) == (older_than is None):
        raise UsageError("give the commits to archive: a revision range (A..B or REV) or --older-than DURATION, "
                         "not both")
    out: list[bytes] = []
    if revs is not None:
        for rev in [revs] if isinstance(revs, str) else revs:
            if ".." in rev:
                a, b = rev.split("..", 1)
                hidden = graph.ancestors(repo.resolve(a or "HEAD"), repo.parents)
                out += sorted(graph.ancestors(repo.resolve(b or "HEAD"), repo.parents) - hidden,
                              key=repo.time_of)
            else:
                out.append(repo.resolve(rev))
    else:
        if older_than < 0:
            raise UsageError("--older-than must not be negative")
        cutoff = (time.time() if now is None else now) - older_than
        tips = [repo.peel(oid) for oid in repo.refs.list().values()]
        reached: set[bytes] = set()
        for tip in tips:
            reached |= graph.ancestors(tip, repo.parents)
        out = sorted((c for c in reached if repo.time_of(c) < cutoff), key=repo.time_of)
    out = [c for c in dict.fromkeys(out) if c not in repo.archived]
    if not out:
        raise UsageError("no commit to archive: none matches, or they are archived already",
                         hint="see `ckstore log`; `ckstore du` shows what is where")
    return out


def archive(repo: Repository, commits: list[bytes], to: str, *, progress: Progress | None = None,
            transport: Transport | None = None, now: float | None = None) -> ArchiveResult:
    """Archive `commits` to the remote `to` (see the module docstring); IntegrityError if the cold remote does
    not verify, with nothing recorded and nothing changed here."""
    progress = progress or NoProgress()
    spec = remotes.get(repo.dir, to)
    if spec.partial is not None:
        raise UsageError(f"{spec.name} is this partial clone's own remote: archive to a remote of its own",
                         hint="add one with `ckstore remote add cold URL`")
    pushed = push_refs(repo, spec.name, {ARCHIVE + c.hex(): c for c in commits}, progress=progress,
                       transport=transport)
    result = ArchiveResult("archive", spec.name, pushed.url, [c.hex() for c in commits], push=pushed)
    remote = Session(transport or open_spec(spec, create=False), spec.name, repo.store.scheme)
    io = io_pool()
    try:
        verify(repo, remote, commits, result, progress)
    finally:
        io.shutdown(wait=True)
        if transport is None:
            remote.t.close()
    when = time.time() if now is None else now
    before = mark(repo, roots(repo, grace=0.0)).live_chunks
    repo.archived.add([Archived(c, spec.name, when) for c in commits])
    after = mark(repo, roots(repo, grace=0.0)).live_chunks
    freed = before - after
    result.chunks = len(freed)
    result.bytes_local = sum(loc.length for loc in repo.store.index.get_many(list(freed)).values())
    repo.refs.audit.append("archive", f"remote:{spec.name}", None, None,
                           f"{len(commits)} commits archived to {pushed.url}: "
                           f"{', '.join(c.hex()[:12] for c in commits[:8])}{' …' if len(commits) > 8 else ''}")
    return result


def verify(repo: Repository, remote: Session, commits: list[bytes], result: ArchiveResult,
           progress: Progress) -> None:
    """Check on the cold remote what archive needs there (the module docstring, step 2); raise on the first
    failure, with a hint saying nothing was archived."""
    hint = f"nothing was archived and nothing changed here; check the remote {remote.url} (`ckstore fsck --remote`)"
    needed: set[bytes] = set()
    for c in commits:
        ref, _ = read_ref(remote, ARCHIVE + c.hex())
        data = remote.get_opt(obj_key(c))
        if ref != c or data is None:
            raise _with_hint(MissingObject("commit", c.hex()), hint)
        commit = verified_object(c, data, remote.url, scheme=remote.scheme)
        mdata = remote.get_opt(obj_key(commit.manifest)) if isinstance(commit, Commit) else None
        if mdata is None:
            raise _with_hint(MissingObject("manifest", c.hex()), hint)
        manifest = verified_object(commit.manifest, mdata, remote.url, scheme=remote.scheme)
        if not isinstance(manifest, Manifest):
            raise _with_hint(CorruptObject("manifest", commit.manifest.hex(), "?", detail=f"on {remote.url}"), hint)
        needed |= manifest.chunk_ids()
    io = io_pool()
    try:
        ridx = load_index(repo, remote, io, [])
    finally:
        io.shutdown(wait=True)
    store, done, raws = repo.store, set(), {}
    todo = set(needed)
    for _round in range(64):
        todo -= done
        if not todo:
            return
        absent = [c for c in todo if c not in ridx]
        if absent:
            raise _with_hint(MissingObject("chunk", absent[0].hex()), hint)
        by_pack: dict[bytes, list] = {}
        for c in todo:
            by_pack.setdefault(ridx[c][0], []).append((c, ridx[c][1]))
        progress.begin(f"archive: verifying on {remote.name}", len(by_pack), "packs")
        nxt: set[bytes] = set()
        for pack_id, items in sorted(by_pack.items()):
            data = remote.get(pack_key(pack_id))
            problem = check_pack_data(remote, pack_id, None, data=data)
            if problem:
                raise _with_hint(CorruptObject("pack", pack_id.hex(), "?", detail=f"on {remote.url}: {problem}"),
                                 hint)
            result.verified_packs += 1
            for c, e in items:
                frame = data[e.offset:e.offset + e.length]
                try:
                    frame = remote.scheme.open_frame(c, frame)
                    base = codec.frame_base(frame)
                    if base is not None and base not in raws and not store.has_chunk(base):
                        nxt.add(base)       # verify the base first (it is not here), then this frame
                        continue
                    raw = codec.decode(frame, e.raw_length, lambda b: raws.get(b) or store.get_chunk(b))
                except (codec.FrameError, CorruptObject) as exc:
                    raise _with_hint(CorruptObject("chunk", c.hex(), "?", detail=f"on {remote.url}: {exc}"),
                                     hint) from None
                if remote.scheme.chunk_id(raw) != c:
                    raise _with_hint(CorruptObject("chunk", c.hex(), remote.scheme.chunk_id(raw).hex(),
                                                   detail=f"on {remote.url}"), hint)
                if not store.has_chunk(c):
                    raws[c] = bytes(raw)
                if base is not None and base not in done and base not in needed:
                    nxt.add(base)
                done.add(c)
                result.verified_chunks += 1
            progress.advance(1)
        progress.end()
        todo |= nxt
    raise _with_hint(CorruptObject("chunk", "?", "?", detail=f"on {remote.url}: delta chains do not resolve"), hint)


def _with_hint(exc, hint: str):
    exc.hint = hint
    return exc


def restore_archive(repo: Repository, commits: list[bytes], *, progress: Progress | None = None,
                    transport: Transport | None = None) -> ArchiveResult:
    """Bring the chunks of archived `commits` back from their cold remote (verified) and remove their records."""
    progress = progress or NoProgress()
    recs = [repo.archived.get(c) for c in commits]
    if not commits or any(r is None for r in recs):
        bad = next((c for c, r in zip(commits, recs) if r is None), None)
        raise UsageError(f"{bad.hex()[:12] if bad else 'nothing'} is not archived",
                         hint="`ckstore log` marks archived commits; `ckstore du` shows what is where")
    names = sorted({r.remote for r in recs})
    out: ArchiveResult | None = None
    for name in names:
        group = [c for c, r in zip(commits, recs) if r.remote == name]
        spec = remotes.get(repo.dir, name)
        remote = Session(transport or open_spec(spec, create=False), spec.name, repo.store.scheme)
        sync = SyncResult("restore-archive", spec.name, remote.url)
        io = io_pool()
        try:
            wanted = list(dict.fromkeys(ch for c in group for ch in repo.manifest_of(c).chunk_ids()))
            fetch_chunks(repo, remote, io, wanted, sync, progress)
        finally:
            io.shutdown(wait=True)
            sync.bytes_received = remote.received
            if transport is None:
                remote.t.close()
        repo.archived.remove(group)
        repo.refs.audit.append("restore-archive", f"remote:{name}", None, None,
                               f"{len(group)} commits restored from {remote.url}")
        part = ArchiveResult("restore-archive", name, remote.url, [c.hex() for c in group], sync.chunks,
                             sync.bytes_received, push=sync)
        if out is None:
            out = part
        else:
            out.commits += part.commits
            out.chunks += part.chunks
            out.bytes_local += part.bytes_local
            out.remote += f", {name}"
    return out
