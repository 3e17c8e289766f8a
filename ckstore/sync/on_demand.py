"""On-demand chunks for partial clones: the engine's ChunkSource, fetching what a read needs from the remote."""

from __future__ import annotations

from ..engine.repository import Repository
from ..model.progress import Progress
from ..results import SyncResult
from ..storage.remotes import RemoteSpec
from .fetch import fetch_chunks
from .session import Session, io_pool, open_spec


class OnDemand:
    """Fetches chunks a read lacks from a partial clone's remote, in one batch, verified like any fetch."""

    def __init__(self, spec: RemoteSpec) -> None:
        self.spec = spec

    def fetch_chunks(self, repo: Repository, chunks: list[bytes], progress: Progress) -> SyncResult:
        """Bring `chunks` into `repo`; the result says what moved."""
        remote = Session(open_spec(self.spec, create=False), self.spec.name)
        result = SyncResult("fetch-missing", self.spec.name, remote.url)
        io = io_pool()
        try:
            fetch_chunks(repo, remote, io, chunks, result, progress)
            result.logical_bytes = sum(loc.raw_length for loc in repo.store.index.get_many(chunks).values())
        finally:
            io.shutdown(wait=True)
            result.bytes_sent, result.bytes_received = remote.sent, remote.received
            remote.t.close()
        return result
