"""Integrity check: packs, index files, objects, refs, reachability and the audit chain; names what is damaged."""

from __future__ import annotations

from ..errors import CkstoreError
from ..model import codec
from ..model.objects import Commit, Manifest, Tag, hash_bytes
from ..model.progress import Progress
from ..results import FsckReport, Problem
from ..storage import remotes
from ..storage.packs import PackFormatError, pack_path, parse_idx, read_pack_entries
from .repository import Repository


def _check_pack(repo: Repository, pack_id: bytes, read_data: bool, report: FsckReport) -> set[bytes]:
    """Checksum, trailer and .idx agreement of one pack; with read_data every frame decoded and hashed.

    Returns the chunks the pack holds intact: with read_data, a damaged pack still vouches for the frames that
    decode to their ids (located through the trailer, or the separately checksummed .idx when the trailer is bad).
    """
    path = pack_path(repo.store.packs_dir, pack_id)
    label = pack_id.hex()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        report.problems.append(Problem("pack", label, "index file present but pack missing"))
        return set()
    try:
        idx_id, idx_entries = parse_idx(pack_path(repo.store.packs_dir, pack_id, ".idx").read_bytes())
        if idx_id != pack_id:
            raise PackFormatError("names another pack")
    except (OSError, PackFormatError) as exc:
        report.problems.append(Problem("index", label, f".idx unreadable: {exc}"))
        idx_entries = None
    try:
        entries = read_pack_entries(data)
        if idx_entries is not None and idx_entries != entries:
            report.problems.append(Problem("index", label, ".idx does not match the pack trailer"))
    except PackFormatError as exc:
        report.problems.append(Problem("pack", label, str(exc)))
        entries = idx_entries if read_data and idx_entries is not None else None
        if entries is None:
            return set()
    if hash_bytes(data) != pack_id:
        report.problems.append(Problem("pack", label, "content does not hash to its name"))
    report.chunks += len(entries)
    if not read_data:
        return {e.chunk for e in entries}
    intact = set()
    for e in entries:
        frame = data[e.offset:e.offset + e.length]
        try:
            base = codec.frame_base(frame)
            raw = codec.decode(frame, e.raw_length, (lambda b: repo.store.get_chunk(b)) if base else None)
            ok, detail = hash_bytes(raw) == e.chunk, "content does not hash to its id"
        except (codec.FrameError, CkstoreError) as exc:
            ok, detail = False, f"undecodable: {exc}"
        if ok:
            intact.add(e.chunk)
        else:
            report.problems.append(Problem("chunk", e.chunk.hex(), f"in pack {label[:12]}: {detail}"))
    return intact


def _check_objects(repo: Repository, report: FsckReport) -> dict[bytes, object]:
    objects = {}
    for oid in repo.store.object_ids():
        report.objects += 1
        try:
            objects[oid] = repo.store.get_object(oid)
        except CkstoreError as exc:
            report.problems.append(Problem("object", oid.hex(), str(exc)))
    return objects


def _check_graph(repo: Repository, objects: dict, chunks: set[bytes], report: FsckReport, partial: bool) -> None:
    """Every ref leads to commits whose manifests, parents and chunks all exist."""
    stack = []
    damaged: list[tuple[str, str]] = []
    refs = repo.refs.list(errors=damaged)
    for name, message in damaged:
        report.problems.append(Problem("ref", name, message))
    for name, oid in refs.items():
        report.refs += 1
        if oid not in objects:
            report.problems.append(Problem("ref", name, f"points to missing or damaged object {oid.hex()}"))
            continue
        obj = objects[oid]
        while isinstance(obj, Tag):
            oid, obj = obj.target, objects.get(obj.target)
        if not isinstance(obj, Commit):
            report.problems.append(Problem("ref", name, f"does not lead to a commit ({oid.hex()})"))
            continue
        stack.append(oid)
    seen: set[bytes] = set()
    while stack:
        oid = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        commit = objects.get(oid)
        if not isinstance(commit, Commit):
            report.problems.append(Problem("object", oid.hex(), "commit referenced by history is missing"))
            continue
        report.commits += 1
        stack.extend(commit.parents)
        manifest = objects.get(commit.manifest)
        if not isinstance(manifest, Manifest):
            report.problems.append(Problem("object", commit.manifest.hex(),
                                           f"manifest of commit {oid.hex()[:12]} is missing or damaged"))
            continue
        missing = manifest.chunk_ids() - chunks
        if partial:  # a partial clone fetches chunks on demand: absent ones are expected, damaged ones are not
            report.not_fetched += len(missing)
            continue
        for c in sorted(missing)[:20]:
            report.problems.append(Problem("chunk", c.hex(), f"needed by commit {oid.hex()[:12]} but not stored"))


def check(repo: Repository, *, read_data: bool, progress: Progress) -> FsckReport:
    """Verify packs (each frame with `read_data`), objects, reachability, refs and audit chain; report, not raise."""
    report = FsckReport()
    packs = sorted(repo.store.pack_ids() | repo.store.index.known_packs())
    progress.begin("fsck", len(packs))
    chunks: set[bytes] = set()
    for pack_id in packs:
        report.packs += 1
        chunks |= _check_pack(repo, pack_id, read_data, report)
        progress.advance(1)
    progress.end()
    objects = _check_objects(repo, report)
    partial = any(spec.partial is not None for spec in remotes.load(repo.dir).values())
    _check_graph(repo, objects, chunks, report, partial)
    for message in repo.refs.audit.verify():
        report.problems.append(Problem("audit", "", message))
    _check_refs_audited(repo, report)
    return report


def _check_refs_audited(repo: Repository, report: FsckReport) -> None:
    """Each ref must hold what its last audit entry moved it to (or, after a crash between the two, still what
    that entry moved it from): anything else is a change the log does not account for, or a cut-off log."""
    last: dict[str, tuple[str | None, str | None]] = {}
    for e in repo.refs.audit.entries():
        last[e.ref] = (e.old, e.new)
    for name, oid in repo.refs.list(errors=[]).items():
        old, new = last.get(name, (None, None))
        if oid.hex() not in (new, old):
            report.problems.append(Problem("audit", name, f"ref holds {oid.hex()[:12]}, which no audit entry "
                                                          "records (changed outside ckstore, or log entries lost)"))
