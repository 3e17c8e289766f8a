"""What fsck --repair --from REMOTE fetches: the chunks and objects a repository lost, verified as any fetch."""

from __future__ import annotations

from ..engine.repository import Repository
from ..fs.fileio import write_atomic
from ..model.progress import Progress
from ..results import SyncResult
from ..storage.remotes import RemoteSpec
from .chunks import fetch_chunks
from .session import Session, io_pool, load_index, obj_key, open_spec, verified_object


def refetch(repo: Repository, spec: RemoteSpec, chunks: list[bytes], objects: list[bytes],
            progress: Progress) -> tuple[int, int]:
    """Fetch `chunks` (with the delta bases they need) and `objects` from the remote; how many of each arrived.
    Whatever the remote lacks too is left missing (the repair reports it)."""
    remote = Session(open_spec(spec, create=False), spec.name, repo.store.scheme)
    result = SyncResult("repair", spec.name, remote.url)
    io = io_pool()
    got_objects = 0
    try:
        for oid in objects:
            data = remote.get_opt(obj_key(oid))
            if data is None:
                continue
            verified_object(oid, data, remote.url, scheme=remote.scheme)
            if write_atomic(repo.store.object_path(oid), data, repo.store.tmp_dir, exclusive=True):
                got_objects += 1
        if chunks:
            held = load_index(repo, remote, io, result.warnings)
            wanted = [c for c in chunks if c in held]  # what the remote lacks too stays missing, and is reported
            if wanted:
                fetch_chunks(repo, remote, io, wanted, result, progress)
    finally:
        io.shutdown(wait=True)
        remote.t.close()
    return result.chunks, got_objects
