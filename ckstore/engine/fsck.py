"""Integrity check of everything a command reads: HEAD, refs, the config, packs and their index files, objects,
reachability, the audit chain and (with --read-data) every frame and every cache entry. Each damage is named once,
at its root (a damaged pack, not every commit that needs it), and a concurrent writer never causes a false alarm:
refs are read first, then what they reach (written before them), and an object missing from a listing is looked
up once more before it is reported."""

from __future__ import annotations

from ..errors import CkstoreError, CorruptObject, DamagedRef, UnsupportedFormat
from ..model import codec
from ..model.objects import AliasMove, Commit, Manifest, Note, Tag, hash_bytes
from ..model.progress import Progress
from ..results import FsckReport, Problem
from ..storage import remotes
from ..storage.config import Config
from ..storage.index import LOCATION, Location
from ..storage.packs import Entry, PackFormatError, pack_path, parse_idx, read_pack_entries
from .repository import Repository


class _Packs:
    """What the pack pass learnt: chunks held intact, and the chunks of each damaged pack."""

    def __init__(self) -> None:
        self.intact: set[bytes] = set()
        self.damaged: dict[bytes, Problem] = {}  # chunk -> the problem of the pack (or frame) that holds it
        self.entries: dict[bytes, list[Entry]] = {}  # pack id -> its .idx entries, when readable
        self.unindexed: dict[bytes, bytes] = {}  # chunk -> a sound pack with no .idx that holds it


def check(repo: Repository, *, read_data: bool, progress: Progress) -> FsckReport:
    """Verify everything (see the module docstring); report, never raise."""
    report = FsckReport()
    refs = _check_refs(repo, report)          # first: everything they reach was written before them
    _check_config(repo, report)
    packs = _check_packs(repo, read_data, report, progress)
    objects = _check_objects(repo, report)
    partial = any(spec.partial is not None for spec in remotes.load(repo.dir).values())
    _check_graph(repo, refs, objects, packs, report, partial)
    for message in repo.refs.audit.verify():
        report.problems.append(Problem("audit", "", message))
    _check_refs_audited(repo, refs, report)
    for records in (repo.dropped, repo.archived):
        for name in records.damaged():
            report.problems.append(Problem("record", f"{records.dir.name}/{name}", "not a well-formed record "
                                           "(ignored: the commit counts as kept)"))
    if read_data:
        _check_caches(repo, packs, report)
    return report


# -- refs and config --------------------------------------------------------------------------------------------

def _check_refs(repo: Repository, report: FsckReport) -> dict[str, bytes]:
    try:
        repo.refs.head()
    except DamagedRef as exc:
        report.problems.append(Problem("ref", "HEAD", exc.detail))
    damaged: list[tuple[str, str]] = []
    refs = repo.refs.list(errors=damaged)
    for name, message in damaged:
        report.problems.append(Problem("ref", name, message))
    report.refs = len(refs)
    return refs


def _check_config(repo: Repository, report: FsckReport) -> None:
    try:
        Config.load(repo.dir / "config")
        problem = Config.checksum_problem(repo.dir / "config")
    except UnsupportedFormat as exc:
        problem = str(exc)
    if problem:
        report.problems.append(Problem("config", "", problem))


# -- packs --------------------------------------------------------------------------------------------------------

def _check_packs(repo: Repository, read_data: bool, report: FsckReport, progress: Progress) -> _Packs:
    packs = _Packs()
    ids = sorted(repo.store.pack_ids() | repo.store.index.known_packs())
    progress.begin("fsck", len(ids), "packs")
    for pack_id in ids:
        report.packs += 1
        found = len(report.problems)
        _check_pack(repo, pack_id, read_data, report, packs)
        if len(report.problems) > found:
            report.damaged_packs.append(pack_id.hex())
        progress.advance(1)
    progress.end()
    for pack_id in repo.store.packs_without_idx():  # garbage unless a commit needs them (then: a lost .idx)
        try:
            data = pack_path(repo.store.packs_dir, pack_id).read_bytes()
            if hash_bytes(data) == pack_id:
                packs.unindexed.update((e.chunk, pack_id) for e in read_pack_entries(data))
        except (OSError, PackFormatError):
            continue
    return packs


def _check_pack(repo: Repository, pack_id: bytes, read_data: bool, report: FsckReport, packs: _Packs) -> None:
    """Checksum, trailer and .idx agreement of one pack; with read_data every frame decoded and hashed. The
    chunks of a damaged pack are recorded as such (the pack is the root cause); with read_data, the frames that
    still decode to their ids count as intact (found through the trailer, or the separately checksummed .idx)."""
    path = pack_path(repo.store.packs_dir, pack_id)
    label = pack_id.hex()
    idx_entries = _idx(repo, pack_id, report)
    if idx_entries is not None:
        packs.entries[pack_id] = idx_entries
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        _damaged(packs, idx_entries or [], report, Problem("pack", label, "index file present but pack missing"))
        return
    problem = None
    try:
        entries = read_pack_entries(data)
        if idx_entries is not None and idx_entries != entries:
            report.problems.append(Problem("index", label, ".idx does not match the pack trailer"))
    except PackFormatError as exc:
        problem = Problem("pack", label, str(exc))
        entries = idx_entries
    if problem is None and hash_bytes(data) != pack_id:
        problem = Problem("pack", label, "content does not hash to its name")
    if entries is None:
        _damaged(packs, [], report, problem or Problem("pack", label, "no readable list of its chunks"))
        return
    report.chunks += len(entries)
    if not read_data:
        if problem is None:
            packs.intact.update(e.chunk for e in entries)
        else:
            _damaged(packs, entries, report, problem)
        return
    if problem is not None:
        report.problems.append(problem)
    for e in entries:
        ok, detail = frame_ok(repo, data, e)
        if ok:
            packs.intact.add(e.chunk)
        else:
            frame_problem = Problem("chunk", e.chunk.hex(), f"in pack {label[:12]}: {detail}")
            report.problems.append(frame_problem)
            packs.damaged[e.chunk] = frame_problem


def _idx(repo: Repository, pack_id: bytes, report: FsckReport) -> list[Entry] | None:
    try:
        idx_id, entries = parse_idx(pack_path(repo.store.packs_dir, pack_id, ".idx").read_bytes())
        if idx_id != pack_id:
            raise PackFormatError("names another pack")
        return entries
    except (OSError, PackFormatError) as exc:
        report.problems.append(Problem("index", pack_id.hex(), f".idx unreadable: {exc}"))
        return None


def frame_ok(repo: Repository, data: bytes | memoryview, e: Entry) -> tuple[bool, str]:
    """(whether the frame `e` places in a pack's `data` decodes to its chunk id, why not)."""
    try:
        frame = repo.store.open_frame(e.chunk, data[e.offset:e.offset + e.length])
    except CorruptObject as exc:
        return False, exc.detail or "does not open"
    try:
        base = codec.frame_base(frame)
        raw = codec.decode(frame, e.raw_length, (lambda b: repo.store.get_chunk(b)) if base else None)
    except codec.FrameError as exc:
        return False, f"undecodable: {exc}"
    except CkstoreError as exc:
        return False, f"its delta base cannot be read ({exc})"
    return (True, "") if repo.store.scheme.chunk_id(raw) == e.chunk else (False, "content does not hash to its id")


def _damaged(packs: _Packs, entries: list[Entry], report: FsckReport, problem: Problem) -> None:
    report.problems.append(problem)
    for e in entries:
        packs.damaged[e.chunk] = problem


# -- objects and history ------------------------------------------------------------------------------------------

def _check_objects(repo: Repository, report: FsckReport) -> dict[bytes, object]:
    objects = {}
    for oid in repo.store.object_ids():
        report.objects += 1
        try:
            objects[oid] = repo.store.get_object(oid)
        except CkstoreError as exc:
            report.problems.append(Problem("object", oid.hex(), str(exc)))
            objects[oid] = None
    return objects


def _lookup(repo: Repository, objects: dict, oid: bytes) -> object:
    """An object from the listing, or (written since the listing, or listed while being renamed) read once more."""
    if oid not in objects:
        try:
            objects[oid] = repo.store.get_object(oid)
        except CkstoreError:
            return None
    return objects[oid]


def _check_graph(repo: Repository, refs: dict[str, bytes], objects: dict, packs: _Packs, report: FsckReport,
                 partial: bool) -> None:
    """Every ref leads to commits whose manifests, parents and chunks all exist; commits that need a damaged
    pack are counted on that pack's problem instead of listed chunk by chunk."""
    stack = []
    for name, oid in refs.items():
        obj = _lookup(repo, objects, oid)
        if isinstance(obj, Note):
            _check_chain(repo, objects, name, oid, lambda n: n.parents, Note, report)
            continue
        if isinstance(obj, AliasMove):  # every holder the alias had must still be there (rollback needs them)
            for move in _check_chain(repo, objects, name, oid, lambda m: (m.previous,) if m.previous else (),
                                     AliasMove, report):
                if move.target is not None:
                    stack.append(move.target)
            continue
        while isinstance(obj, Tag):
            oid, obj = obj.target, _lookup(repo, objects, obj.target)
        if obj is None:
            if oid.hex() not in {p.id for p in report.problems}:
                report.problems.append(Problem("ref", name, f"points to missing object {oid.hex()}"))
        elif not isinstance(obj, Commit):
            report.problems.append(Problem("ref", name, f"does not lead to a commit ({oid.hex()})"))
        else:
            stack.append(oid)
    seen: set[bytes] = set()
    lost: set[bytes] = set()  # commits that need something missing or damaged
    without_idx: dict[bytes, set[bytes]] = {}  # a sound pack whose .idx is lost -> the commits needing it
    affected: dict[int, tuple[Problem, set[bytes]]] = {}
    reported = {p.id for p in report.problems}
    while stack:
        oid = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        commit = _lookup(repo, objects, oid)
        if not isinstance(commit, Commit):
            if oid.hex() not in reported:
                report.problems.append(Problem("object", oid.hex(), "commit referenced by history is missing"))
            continue
        report.commits += 1
        stack.extend(repo.past_dropped(commit.parents))  # retention's dropped commits are not history
        manifest = _lookup(repo, objects, commit.manifest)
        if not isinstance(manifest, Manifest):
            lost.add(oid)
            if commit.manifest.hex() not in reported:
                report.problems.append(Problem("object", commit.manifest.hex(),
                                               f"manifest of commit {oid.hex()[:12]} is missing"))
            continue
        missing = manifest.chunk_ids() - packs.intact
        for c in missing:
            if c in packs.damaged:
                p = packs.damaged[c]
                affected.setdefault(id(p), (p, set()))[1].add(oid)
        missing = {c for c in missing if c not in packs.damaged}
        for c in [c for c in missing if c in packs.unindexed]:
            without_idx.setdefault(packs.unindexed[c], set()).add(oid)
            missing.discard(c)
            lost.add(oid)
        if partial:  # a partial clone fetches chunks on demand: absent ones are expected, damaged ones are not
            report.not_fetched += len(missing)
            continue
        if missing:
            lost.add(oid)
            first = min(missing)
            report.problems.append(Problem("chunk", first.hex(), f"needed by commit {oid.hex()[:12]} but not "
                                           f"stored ({len(missing)} chunks of that commit are missing)"))
    for pack_id, commits in sorted(without_idx.items()):
        report.problems.append(Problem("index", pack_id.hex(), f"the pack has no .idx, so its chunks are not indexed; "
                                       f"{len(commits)} commits need them (`fsck --repair` rebuilds the .idx)"))
    for problem, commits in affected.values():
        names = ", ".join(sorted(c.hex()[:12] for c in commits)[:5])
        problem.message += f" (needed by {len(commits)} commit{'s' * (len(commits) != 1)}: {names})"
        lost |= commits
    report.affected = sorted(c.hex() for c in lost)


def _check_chain(repo: Repository, objects: dict, name: str, head: bytes, links, kind: type,
                 report: FsckReport) -> list:
    """The objects of a notes or alias history from its head, each of `kind`; a missing or foreign one is named."""
    out, seen, stack = [], set(), [head]
    while stack:
        oid = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        obj = _lookup(repo, objects, oid)
        if not isinstance(obj, kind):
            what = "a missing object" if obj is None else f"a {type(obj).__name__.lower()}"
            report.problems.append(Problem("ref", name, f"its history leads to {what} ({oid.hex()[:12]})"))
            continue
        out.append(obj)
        stack.extend(links(obj))
    return out


def _check_refs_audited(repo: Repository, refs: dict[str, bytes], report: FsckReport) -> None:
    """Each ref must hold what its last audit entry moved it to (or, after a crash between the two, still what
    that entry moved it from). The log is read after the refs: an entry is written before its ref moves, so a
    concurrent change is always already in it."""
    last: dict[str, tuple[str | None, str | None]] = {}
    history: dict[str, set[str | None]] = {}
    for e in repo.refs.audit.entries():
        last[e.ref] = (e.old, e.new)
        history.setdefault(e.ref, set()).update((e.old, e.new))
    for name, oid in refs.items():
        old, new = last.get(name, (None, None))
        # a ref read before a concurrent move holds a value the log had at some point
        if oid.hex() not in (new, old) and oid.hex() not in history.get(name, set()):
            report.problems.append(Problem("audit", name, f"ref holds {oid.hex()[:12]}, which no audit entry "
                                                          "records (changed outside ckstore, or log entries lost)"))


# -- caches -------------------------------------------------------------------------------------------------------

def _check_caches(repo: Repository, packs: _Packs, report: FsckReport) -> None:
    """Every cache entry against the truth: chunk locations against the .idx files, commit encodings against
    their ids, stat-cache entries against their hashes. A wrong entry is no data loss (`fsck --repair` or
    `--reindex` rebuilds the cache) but it is named."""
    index = repo.store.index
    truth: dict[bytes, set[Location]] = {}  # a chunk may be in two packs (a repack or fetch cut short): either will do
    for pid, entries in packs.entries.items():
        for e in entries:
            truth.setdefault(e.chunk, set()).add(Location(pid, e.offset, e.length, e.raw_length))
    cached = index.items("chunks")
    wrong = sum(len(v) != LOCATION.size or Location(*LOCATION.unpack(v)) not in truth.get(k, ()) for k, v in cached)
    unindexed = len(set(truth) - {k for k, _ in cached})
    if wrong or unindexed:
        report.problems.append(Problem("cache", "chunks", f"{wrong} chunk locations disagree with the packs' .idx "
                                       f"files, {unindexed} indexed chunks are missing"))
    scheme = repo.store.scheme
    bad_commits = [k for k, v in index.items("commits")
                   if (opened := scheme.open_cache(k, v)) is None or scheme.object_id(opened) != k]
    if bad_commits:
        report.problems.append(Problem("cache", "commits", f"{len(bad_commits)} cached commits do not hash to "
                                       f"their ids (first {bad_commits[0].hex()[:12]})"))
    bad_stats = [k for k, v in index.items("stat") if (o := scheme.open_cache(k, v)) is None or len(o) < 32
                 or hash_bytes(o[32:]) != o[:32]]
    if bad_stats:
        report.problems.append(Problem("cache", "stat", f"{len(bad_stats)} stat-cache entries do not match "
                                       "their hashes"))
