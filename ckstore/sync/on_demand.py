"""On-demand chunks: the engine's ChunkSource, fetching what a read needs from a partial clone's remote and from
the cold remotes that archived commits name (`archived/<id>` records), verified like any fetch."""

from __future__ import annotations

import warnings

from ..engine.repository import Repository
from ..errors import CkstoreError, MissingObject
from ..model.progress import Progress, human_bytes
from ..results import SyncResult
from ..storage import remotes
from ..storage.remotes import RemoteSpec
from .chunks import fetch_chunks
from .session import Session, io_pool, load_index, open_spec


class ColdTierFetch(UserWarning):
    """A read needs chunks of an archived commit: they are being fetched from its cold remote (one line)."""


class OnDemand:
    """Fetches chunks a read lacks from a partial clone's remote, in one batch, verified like any fetch."""

    def __init__(self, spec: RemoteSpec) -> None:
        self.spec = spec

    def fetch_chunks(self, repo: Repository, chunks: list[bytes], progress: Progress) -> SyncResult:
        """Bring `chunks` into `repo`; the result says what moved."""
        remote = Session(open_spec(self.spec, create=False), self.spec.name, repo.store.scheme)
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


class _Labelled:
    """A Progress whose tasks carry the cold remote's name."""

    def __init__(self, inner: Progress, label: str) -> None:
        self.inner, self.label = inner, label

    def begin(self, description: str, total: int, unit: str = "bytes") -> None:
        self.inner.begin(f"{description} {self.label}", total, unit)

    def advance(self, n: int) -> None:
        self.inner.advance(n)

    def end(self) -> None:
        self.inner.end()


class Tiered:
    """The chunk source of a repository with a partial remote and/or archived commits: the partial remote first,
    then each cold remote an `archived/` record names. A chunk none of them has is MissingObject."""

    def __init__(self, partial: RemoteSpec | None = None) -> None:
        self.partial = OnDemand(partial) if partial is not None else None

    def fetch_chunks(self, repo: Repository, chunks: list[bytes], progress: Progress) -> SyncResult:
        """Bring `chunks` into `repo` from wherever they are; the result sums what moved."""
        remaining = list(chunks)
        total: SyncResult | None = None
        if self.partial is not None:
            try:
                total = self.partial.fetch_chunks(repo, remaining, progress)
            except MissingObject:
                if not repo.archived.records():
                    raise
            have = repo.store.index.get_many(remaining)
            remaining = [c for c in remaining if c not in have]
        known = remotes.load(repo.dir)
        for name in sorted({r.remote for r in repo.archived.records().values()}):
            if not remaining:
                break
            if name not in known:
                continue
            got = self._from_cold(repo, known[name], remaining, progress)
            if got is not None:
                total = got if total is None else _add(total, got)
            have = repo.store.index.get_many(remaining)
            remaining = [c for c in remaining if c not in have]
        if remaining:
            exc = MissingObject("chunk", remaining[0].hex())
            names = sorted({r.remote for r in repo.archived.records().values()})
            exc.hint = (f"{len(remaining)} chunks are neither here nor on "
                        f"{', '.join(names) if names else 'any remote'}; check `ckstore remote list`")
            raise exc
        return total or SyncResult("fetch-missing", "", "")

    def _from_cold(self, repo: Repository, spec: RemoteSpec, chunks: list[bytes],
                   progress: Progress) -> SyncResult | None:
        remote = Session(open_spec(spec, create=False), spec.name, repo.store.scheme)
        result = SyncResult("fetch-archived", spec.name, remote.url)
        io = io_pool()
        try:
            try:
                ridx = load_index(repo, remote, io, result.warnings)
            except CkstoreError:
                return None  # an unreachable cold remote: the error names the chunk at the end
            here = [c for c in chunks if c in ridx]
            if not here:
                return None
            size = sum(ridx[c][1].length for c in here)
            warnings.warn(f"fetching {len(here)} chunks ({human_bytes(size)}) of archived commits from the cold "
                          f"remote {spec.name} ({remote.url})", ColdTierFetch, stacklevel=4)
            fetch_chunks(repo, remote, io, here, result, _Labelled(progress, f"from cold remote {spec.name}"))
            result.logical_bytes = sum(loc.raw_length for loc in repo.store.index.get_many(here).values())
        finally:
            io.shutdown(wait=True)
            result.bytes_sent, result.bytes_received = remote.sent, remote.received
            remote.t.close()
        return result


def _add(a: SyncResult, b: SyncResult) -> SyncResult:
    a.chunks += b.chunks
    a.packs += b.packs
    a.bytes_received += b.bytes_received
    a.logical_bytes += b.logical_bytes
    a.warnings += b.warnings
    return a
