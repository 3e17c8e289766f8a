"""fsck --remote NAME: check a remote as fsck checks a repository — every ref leads to commits whose objects and
chunks the remote holds, every object hashes to its name, every pack index parses; with read_data every pack's
bytes hash to its name (which vouches for every frame in it) and its trailer agrees with its .idx."""

from __future__ import annotations

from ..engine.repository import Repository
from ..errors import CkstoreError
from ..model.objects import Commit, Manifest, Tag, hash_bytes
from ..model.progress import Progress
from ..model.refnames import HEADS, TAGS
from ..results import FsckReport, Problem
from ..storage import remotes
from ..storage.packs import PackFormatError, parse_idx, read_pack_entries
from .remote_view import ARCHIVE, fetch_record
from .remote_refs import remote_refs
from .session import Session, io_pool, obj_key, open_spec, pack_key, verified_object

_PACK_SUFFIX = ".idx"


def check_remote(repo: Repository, name: str, *, read_data: bool, progress: Progress) -> FsckReport:
    """Check the remote `name` of `repo` (see the module docstring); report, never raise for damage found."""
    spec = remotes.get(repo.dir, name)
    remote = Session(open_spec(spec, create=False), spec.name, repo.store.scheme)
    report = FsckReport()
    io = io_pool()
    warnings: list[str] = []
    try:
        refs = {HEADS + n: oid for n, oid in remote_refs(remote, io, HEADS, warnings).items()}
        refs.update({TAGS + n: oid for n, oid in remote_refs(remote, io, TAGS, warnings).items()})
        refs.update({ARCHIVE + n: oid for n, oid in remote_refs(remote, io, ARCHIVE, warnings).items()})
        for w in warnings:
            report.problems.append(Problem("ref", "", w))
        report.refs = len(refs)
        chunks = _check_packs(remote, read_data, report, progress)
        _check_history(remote, refs, chunks, report)
    finally:
        io.shutdown(wait=True)
        remote.t.close()
    return report


def _check_packs(remote: Session, read_data: bool, report: FsckReport, progress: Progress) -> set[bytes]:
    keys = [k for k in remote.list("packs") if k.endswith(_PACK_SUFFIX)]
    progress.begin("fsck remote", len(keys), "packs")
    chunks: set[bytes] = set()
    for key in keys:
        report.packs += 1
        label = key.rsplit("/", 1)[-1][:-len(_PACK_SUFFIX)]
        try:
            pack_id, entries = parse_idx(remote.get(key))
            if pack_id.hex() != label:
                raise PackFormatError("names another pack")
        except (PackFormatError, CkstoreError) as exc:
            report.problems.append(Problem("index", label, f"{key}: {exc}"))
            progress.advance(1)
            continue
        report.chunks += len(entries)
        if read_data:
            problem = check_pack_data(remote, pack_id, entries)
            if problem:
                report.problems.append(Problem("pack", label, problem))
                progress.advance(1)
                continue
        chunks.update(e.chunk for e in entries)
        progress.advance(1)
    progress.end()
    return chunks


def check_pack_data(remote: Session, pack_id: bytes, entries: list | None, *, data: bytes | None = None
                    ) -> str | None:
    """What is wrong with a remote pack (its bytes, or `data` already read): not hashing to its name, a damaged
    trailer, a trailer that disagrees with `entries` (its .idx; None: not compared); None when it is sound."""
    if data is None:
        try:
            data = remote.get(pack_key(pack_id))
        except CkstoreError as exc:
            return f"unreadable: {exc}"
    if hash_bytes(data) != pack_id:
        return "content does not hash to its name"
    try:
        if read_pack_entries(data) != entries and entries is not None:
            return ".idx does not match the pack trailer"
    except PackFormatError as exc:
        return str(exc)
    return None


def _check_history(remote: Session, refs: dict[str, bytes], chunks: set[bytes], report: FsckReport) -> None:
    objects: dict[bytes, object] = {}

    def get(oid: bytes) -> object:
        if oid not in objects:
            try:
                data = remote.get_opt(obj_key(oid))
                objects[oid] = None if data is None else verified_object(oid, data, remote.url, scheme=remote.scheme)
                report.objects += 1
            except CkstoreError as exc:
                report.problems.append(Problem("object", oid.hex(), str(exc)))
                objects[oid] = None
        return objects[oid]

    stack: list[bytes] = []
    for name, oid in refs.items():
        obj = get(oid)
        while isinstance(obj, Tag):
            oid, obj = obj.target, get(obj.target)
        if not isinstance(obj, Commit):
            report.problems.append(Problem("ref", name, f"does not lead to a commit the remote holds ({oid.hex()})"))
        else:
            stack.append(oid)
    seen: set[bytes] = set()
    while stack:
        oid = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        commit = get(oid)
        if commit is None and oid not in refs.values():
            try:
                rec = fetch_record(remote, oid)
            except CkstoreError as exc:
                report.problems.append(Problem("object", oid.hex(), str(exc)))
                continue
            if rec is not None:  # dropped by retention: history goes on behind it
                stack.extend(rec.parents)
                continue
        if not isinstance(commit, Commit):
            report.problems.append(Problem("object", oid.hex(), "commit referenced by history is missing"))
            continue
        report.commits += 1
        stack.extend(commit.parents)
        manifest = get(commit.manifest)
        if not isinstance(manifest, Manifest):
            report.problems.append(Problem("object", commit.manifest.hex(), f"manifest of {oid.hex()[:12]} missing"))
            continue
        missing = manifest.chunk_ids() - chunks
        if missing:
            report.affected.append(oid.hex())
            report.problems.append(Problem("chunk", min(missing).hex(), f"needed by commit {oid.hex()[:12]} but "
                                           f"not on the remote ({len(missing)} chunks of that commit)"))
