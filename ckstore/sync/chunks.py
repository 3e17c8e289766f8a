"""Chunk frames from a remote into local packs, each decoded and hashed to its id before its pack is sealed.

The frames are read in runs (one range GET over neighbouring frames of one pack), and the runs are taken in the
order of the chunks asked for, not pack by pack. A fetch asks for the chunks of its commits oldest first and
position by position (see `fetch._wanted`), so a run of one version's frames is followed by the run of the next
version's frames of the same tensors: a delta frame's base was verified moments before, and is still in the
bounded cache of verified chunks. Pack order would instead verify a whole version's deltas after their bases had
left memory (decoding each base again from the new packs) or hold the deltas until then (1.2 GB of RSS on a
1.9 GB clone).

Full frames are decoded where they were read (the request threads); so is a delta whose base is in the cache.
The others wait, keyed by their base, and are verified on the verify threads as soon as the base is.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from ..engine.parallel import ordered_map
from ..engine.repository import Repository
from ..errors import CorruptObject, RemoteNotFound
from ..model import codec
from ..model.objects import hash_bytes
from ..model.progress import Progress
from ..results import SyncResult
from ..storage.packs import Entry
from ..storage.store import RecentChunks
from . import session
from .session import Session, load_index, missing_on, pack_key, remote_config

MAX_RUN = 8 << 20               # one range GET covers at most this many bytes of frames...
RUN_GAP = 16 << 10              # ...and skips over gaps up to this size between wanted frames
RUNS_IN_FLIGHT = 3              # runs read (and their full frames decoded) ahead of the verifying thread
RECENT_LIMIT = 32 << 20         # the most recently verified raw chunks, for the delta frames that name them
VERIFY_WORKERS = 2              # threads decoding delta frames whose base has just been verified
WAIT_LIMIT = 64 << 20           # delta frames held for a base not verified yet; past it they are fetched again


@dataclass
class _Run:
    pack: bytes
    start: int
    end: int
    items: list[tuple[bytes, Entry]]
    rank: int = 0               # the position of its first chunk in the order asked for


def _coalesce(locs: dict[bytes, tuple[bytes, Entry]], rank: dict[bytes, int]) -> list[_Run]:
    """The frames as runs of neighbouring frames within each pack, in the order of their first chunk's `rank`."""
    by_pack: dict[bytes, list[tuple[bytes, Entry]]] = defaultdict(list)
    for c, (pack, e) in locs.items():
        by_pack[pack].append((c, e))
    runs: list[_Run] = []
    for pack, items in by_pack.items():
        items.sort(key=lambda it: it[1].offset)
        cur: _Run | None = None
        for c, e in items:
            end = e.offset + e.length
            if cur is not None and e.offset <= cur.end + RUN_GAP and max(end, cur.end) - cur.start <= MAX_RUN:
                cur.end = max(cur.end, end)
                cur.items.append((c, e))
                cur.rank = min(cur.rank, rank[c])
            else:
                cur = _Run(pack, e.offset, end, [(c, e)], rank[c])
                runs.append(cur)
    runs.sort(key=lambda r: (r.rank, r.pack, r.start))
    return runs


def fetch_chunks(repo: Repository, remote: Session, io: ThreadPoolExecutor, wanted: list[bytes], result: SyncResult,
                 progress: Progress, on_chunk: Callable[[bytes, memoryview], None] | None = None) -> None:
    """Fetch the `wanted` chunks the local index lacks, and the delta bases they need; all verified. Chunks are
    fetched in the order given: ask for bases before the deltas on them, neighbours together. `on_chunk` is
    handed each fetched chunk's verified bytes (`clone --checkout` writes them into the files)."""
    with repo.writing("fetch"), ThreadPoolExecutor(VERIFY_WORKERS, thread_name_prefix="ckstore-verify") as pool:
        _Fetch(repo, remote, io, pool, result, progress, on_chunk).run(wanted)


class _Fetch:
    """One fetch of chunk frames into a pack sink."""

    def __init__(self, repo: Repository, remote: Session, io: ThreadPoolExecutor, pool: ThreadPoolExecutor,
                 result: SyncResult, progress: Progress,
                 on_chunk: Callable[[bytes, memoryview], None] | None = None) -> None:
        self.repo, self.remote, self.io, self.pool, self.on_chunk = repo, remote, io, pool, on_chunk
        self.result, self.progress, self.url = result, progress, remote.url
        self.recent = RecentChunks(RECENT_LIMIT)
        self.waiting: dict[bytes, list[tuple[bytes, bytes, int, bytes]]] = defaultdict(list)  # base -> deltas
        self.waiting_bytes = 0
        self.again: list[bytes] = []  # deltas let go of (over WAIT_LIMIT): fetched again, after their bases
        self.sink = repo.store.sink(session.PACK_LIMIT, index_each_pack=True)

    def run(self, wanted: list[bytes]) -> None:
        """Fetch what of `wanted` the store lacks, round after round for delta bases outside it."""
        store = self.repo.store
        have = store.index.get_many(wanted)
        todo = [c for c in wanted if c not in have]
        if not todo:
            return
        cfg = self.remote.config if self.remote.config is not None else remote_config(self.remote)
        # a frame may hold at most one chunk: the remote's chunk size (or this repository's, whose chunks it may
        # have been pushed) plus the codec's headers; an index entry claiming more is not believed
        limits = session.FrameLimits.for_chunks(cfg.get("chunk_size", 1 << 20), self.repo.config.chunk_size)
        refused: dict[bytes, str] = {}
        ridx = load_index(self.repo, self.remote, self.io, self.result.warnings, limits, refused)
        requested: set[bytes] = set()
        try:
            for _round in range(64):
                locs = {}
                for c in dict.fromkeys(todo):
                    if c in requested or self.sink.has(c):
                        continue
                    hit = ridx.get(c)
                    if hit is None and c in refused:
                        raise CorruptObject("chunk", c.hex(), "?", detail=f"on {self.url}: {refused[c]}")
                    if hit is None:
                        raise missing_on("chunk", c, self.url)
                    locs[c] = hit
                requested.update(locs)
                bases = self._round(_coalesce(locs, {c: i for i, c in enumerate(locs)}))
                requested.difference_update(self.again)
                todo = [b for b in bases if b not in requested] + self.again
                self.again = []
                if not todo:
                    break
            if self.waiting:
                base, items = next(iter(self.waiting.items()))
                raise CorruptObject("chunk", items[0][0].hex(), "?", detail=f"from {self.url}: its delta base "
                                    f"{base.hex()[:12]} cannot be resolved")
            self.sink.seal()
        except BaseException:
            self.sink.abort()
            raise
        finally:
            self.result.packs += self.sink.packs

    def _round(self, runs: list[_Run]) -> list[bytes]:
        """Fetch and verify `runs`; the delta bases they named that are neither here nor fetched yet."""
        self.progress.begin("fetch", sum(r.end - r.start for r in runs))
        bases: list[bytes] = []
        try:
            for frames in ordered_map(self.io, self._read, runs, window=RUNS_IN_FLIGHT):
                ready = []
                for c, e, frame, base, raw in frames:
                    if raw is not None:
                        ready += self._accept(c, frame, e.raw_length, raw)
                    elif self.sink.has(base) or base in self.recent.items:
                        ready.append((c, frame, e.raw_length, base))
                    else:
                        if not self.waiting[base]:
                            bases.append(base)
                        self.waiting[base].append((c, bytes(frame), e.raw_length, base))
                        self.waiting_bytes += e.length
                if self.waiting_bytes > WAIT_LIMIT:
                    # a remote whose packs are not in `chunks_in_order`'s order (written by an older push)
                    # would otherwise have this fetch hold most of its deltas: they are read again next round
                    self.again += [it[0] for items in self.waiting.values() for it in items]
                    self.waiting.clear()
                    self.waiting_bytes = 0
                self._verify(ready)
                self.progress.advance(sum(f[1].length for f in frames))
        finally:
            self.progress.end()
        return bases

    def _read(self, run: _Run) -> list[tuple[bytes, Entry, memoryview, bytes | None, memoryview | None]]:
        """One range GET (a request thread); its full frames, and deltas whose base is cached, verified here."""
        try:
            data = self.remote.get(pack_key(run.pack), run.start, run.end)
        except RemoteNotFound:
            raise missing_on("pack", run.pack, self.url) from None
        if len(data) != run.end - run.start:
            raise CorruptObject("pack", run.pack.hex(), "?",
                                detail=f"{self.url}: truncated, {len(data)} of {run.end - run.start} bytes at "
                                       f"offset {run.start}")
        view, out = memoryview(data), []
        for c, e in run.items:
            frame = view[e.offset - run.start:e.offset - run.start + e.length]
            try:
                base = codec.frame_base(frame)
            except codec.FrameError as exc:
                raise CorruptObject("chunk", c.hex(), "?", detail=f"from {self.url}: {exc}") from None
            cached = None if base is None else self.recent.get(base)
            raw = self._decode(c, frame, e.raw_length, cached) if base is None or cached is not None else None
            out.append((c, e, frame, base, raw))
        return out

    def _decode(self, c: bytes, frame: bytes | memoryview, raw_length: int, base: memoryview | None) -> memoryview:
        """The frame's bytes, checked against the chunk's id (any thread)."""
        try:
            raw = codec.decode(frame, raw_length, None if base is None else (lambda _: base))
        except codec.FrameError as exc:
            raise CorruptObject("chunk", c.hex(), "?", detail=f"from {self.url}: {exc}") from None
        got = hash_bytes(raw)
        if got != c:
            raise CorruptObject("chunk", c.hex(), got.hex(), detail=f"from {self.url}")
        return raw

    def _base(self, base: bytes) -> memoryview:
        cached = self.recent.get(base)
        return cached if cached is not None else self.sink.chunk(base)

    def _verify(self, ready: list[tuple[bytes, bytes, int, bytes]]) -> None:
        """Verify deltas whose bases are here, on the verify threads, and then those waiting on them in turn."""
        while ready:
            batch, ready = ready, []
            raws = self.pool.map(lambda it: self._decode(it[0], it[1], it[2], self._base(it[3])), batch)
            for (c, frame, raw_length, _), raw in zip(batch, raws):
                ready += self._accept(c, frame, raw_length, raw)

    def _accept(self, c: bytes, frame: bytes | memoryview, raw_length: int, raw: memoryview
                ) -> list[tuple[bytes, bytes, int, bytes]]:
        """Add a verified frame to the sink; the deltas that waited for it."""
        self.result.chunks += self.sink.add(c, frame, raw_length)  # a view: writev takes it, no copy
        self.recent.put(c, raw)
        if self.on_chunk is not None:
            self.on_chunk(c, raw)
        waited = self.waiting.pop(c, [])
        self.waiting_bytes -= sum(len(it[1]) for it in waited)
        return waited
