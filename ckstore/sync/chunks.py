"""Chunk frames from a remote into local packs, each decoded and hashed to its id before its pack is sealed.

The frames are read in runs (one range GET over neighbouring frames of one pack), and the runs are taken in the
order of the chunks asked for, not pack by pack. A fetch asks for the chunks of its commits oldest first and
position by position (`select.chunks_in_order`, the order push packs them in), so a run of one version's frames
is followed by the run of the next version's frames of the same tensors: a delta frame's base was verified
moments before, and is still in the bounded cache of verified chunks. Pack order would instead verify a whole version's deltas after their bases had
left memory (decoding each base again from the new packs) or hold the deltas until then (1.2 GB of RSS on a
1.9 GB clone).

Full frames are decoded where they were read (the request threads); so is a delta whose base is in the cache.
The others wait, keyed by their base, and are verified on the verify threads as soon as the base is; past
WAIT_LIMIT they wait in a spill file instead of memory (a shallow clone's bases come in later rounds). S3 keeps
more reads in flight, in smaller runs, than a directory (`Transport.reads_in_flight`).
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from ..engine.parallel import ordered_map
from ..engine.repository import Repository
from ..errors import CorruptObject, RemoteNotFound
from ..model import codec
from ..model.progress import Progress
from ..results import SyncResult
from ..storage.packs import Entry
from ..storage.recent import RecentChunks
from . import session
from .session import Session, load_index, missing_on, pack_key, remote_config

MAX_RUN = 8 << 20               # one range GET covers at most this many bytes of frames...
RUN_GAP = 16 << 10              # ...and skips over gaps up to this size between wanted frames
RUNS_IN_FLIGHT = 3              # runs read (and their full frames decoded) ahead of the verifying thread, or
#                                 the transport's `reads_in_flight` when it asks for more (S3: 8)
RECENT_LIMIT = 32 << 20         # the most recently verified raw chunks, for the delta frames that name them
VERIFY_WORKERS = 2              # threads decoding delta frames whose base has just been verified
WAIT_LIMIT = 32 << 20           # delta frames held in memory for a base not verified yet; past it, in a spill file


@dataclass
class _Run:
    pack: bytes
    start: int
    end: int
    items: list[tuple[bytes, Entry]]
    rank: int = 0               # the position of its first chunk in the order asked for


def _coalesce(locs: dict[bytes, tuple[bytes, Entry]], rank: dict[bytes, int], max_run: int | None = None
              ) -> list[_Run]:
    """The frames as runs of neighbouring frames within each pack (at most `max_run` bytes, default MAX_RUN), in
    the order of their first chunk's `rank`."""
    max_run = MAX_RUN if max_run is None else max_run
    by_pack: dict[bytes, list[tuple[bytes, Entry]]] = defaultdict(list)
    for c, (pack, e) in locs.items():
        by_pack[pack].append((c, e))
    runs: list[_Run] = []
    for pack, items in by_pack.items():
        items.sort(key=lambda it: it[1].offset)
        cur: _Run | None = None
        for c, e in items:
            end = e.offset + e.length
            if cur is not None and e.offset <= cur.end + RUN_GAP and max(end, cur.end) - cur.start <= max_run:
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
        self.waiting_bytes = 0                       # of the waiting frames held in memory (not spilled)
        self.spill = _Spill(repo.store.tmp_dir)
        self.window = max(RUNS_IN_FLIGHT, min(getattr(remote.t, "reads_in_flight", 0), session.IO_WORKERS))
        # more reads in flight (S3) in smaller runs: the same bytes held, more of the wait overlapped
        self.run_size = max(min(MAX_RUN, 1 << 20), MAX_RUN * RUNS_IN_FLIGHT // self.window)
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
                bases = self._round(_coalesce(locs, {c: i for i, c in enumerate(locs)}, self.run_size))
                todo = [b for b in bases if b not in requested]
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
            self.spill.close()
            self.result.packs += self.sink.packs

    def _round(self, runs: list[_Run]) -> list[bytes]:
        """Fetch and verify `runs`; the delta bases they named that are neither here nor fetched yet."""
        self.progress.begin("fetch", sum(r.end - r.start for r in runs))
        bases: list[bytes] = []
        try:
            for frames in ordered_map(self.io, self._read, runs, window=self.window):
                ready = []
                for c, e, frame, base, raw in frames:
                    if raw is not None:
                        ready += self._accept(c, frame, e.raw_length, raw)
                    elif self.sink.has(base) or base in self.recent:
                        ready.append((c, frame, e.raw_length, base))
                    else:
                        if not self.waiting[base]:
                            bases.append(base)
                        self.waiting[base].append((c, bytes(frame), e.raw_length, base))
                        self.waiting_bytes += e.length
                if self.waiting_bytes > WAIT_LIMIT:
                    # deltas whose bases come in a later round (a shallow clone's chains) or much later in this
                    # one (packs an older push wrote in hash order) wait in a temporary file, unverified and
                    # unindexed, not in memory; they are read back when their base is verified
                    for items in self.waiting.values():
                        items[:] = [(c, self.spill.put(f), n, b) if isinstance(f, bytes) else (c, f, n, b)
                                    for c, f, n, b in items]
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
                opened = self.remote.scheme.open_frame(c, frame)   # the stored frame itself when not encrypted
                base = codec.frame_base(opened)
            except (codec.FrameError, CorruptObject) as exc:
                raise CorruptObject("chunk", c.hex(), "?", detail=f"from {self.url}: {exc}") from None
            # only the cache here: the sink is the verifying thread's while requests run
            cached = None if base is None else self.recent.get(base)
            raw = self._verified(c, frame, e.raw_length, cached, opened) if base is None or cached is not None else None
            out.append((c, e, frame, base, raw))
        return out

    def _verified(self, c: bytes, frame: bytes | memoryview, raw_length: int, base: memoryview | None,
                  opened: bytes | memoryview | None = None) -> memoryview:
        """The stored frame's bytes (`base`: its base's bytes, for a delta; `opened`: the frame opened already),
        checked against the chunk's id and handed to `on_chunk` (any thread)."""
        scheme = self.remote.scheme
        try:
            opened = scheme.open_frame(c, frame) if opened is None else opened
            raw = codec.decode(opened, raw_length, None if base is None else (lambda _: base))
        except (codec.FrameError, CorruptObject) as exc:
            raise CorruptObject("chunk", c.hex(), "?", detail=f"from {self.url}: {exc}") from None
        if (got := scheme.chunk_id(raw)) != c:
            raise CorruptObject("chunk", c.hex(), got.hex(), detail=f"from {self.url}")
        if self.on_chunk is not None:
            self.on_chunk(c, raw)
        return raw

    def _base(self, base: bytes) -> memoryview:
        cached = self.recent.get(base)
        return cached if cached is not None else self.sink.chunk(base)

    def _verify(self, ready: list[tuple[bytes, bytes, int, bytes]]) -> None:
        """Verify deltas whose bases are here, on the verify threads, and then those waiting on them in turn."""
        while ready:
            batch, ready = ready, []
            # all of the batch first: the verify threads may read the sink, which only this thread writes
            done = list(self.pool.map(self._verify_waited, batch))
            for (c, _, raw_length, _), (frame, raw) in zip(batch, done):
                ready += self._accept(c, frame, raw_length, raw)

    def _verify_waited(self, item: tuple) -> tuple[bytes | memoryview, memoryview]:
        """(frame, its verified bytes) of a delta that waited for its base: its frame perhaps in the spill file."""
        c, frame, raw_length, base = item
        frame = self.spill.get(frame)
        return frame, self._verified(c, frame, raw_length, self._base(base))

    def _accept(self, c: bytes, frame: bytes | memoryview, raw_length: int, raw: memoryview
                ) -> list[tuple[bytes, bytes, int, bytes]]:
        """Add a verified frame to the sink; the deltas that waited for it."""
        self.result.chunks += self.sink.add(c, frame, raw_length)  # a view: writev takes it, no copy
        self.recent.put(c, raw)
        waited = self.waiting.pop(c, [])
        self.waiting_bytes -= sum(len(it[1]) for it in waited if isinstance(it[1], bytes))
        return waited


class _Spill:
    """Delta frames waiting for their base, in an unlinked temporary file (nothing in it is believed: each frame
    is verified when read back, like any fetched frame)."""

    def __init__(self, tmp_dir) -> None:
        self.tmp_dir, self.file, self.size = tmp_dir, None, 0

    def put(self, frame: bytes) -> tuple[int, int]:
        """Store a frame; its (offset, length) in the file."""
        if self.file is None:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            self.file = tempfile.TemporaryFile(dir=self.tmp_dir, prefix="fetch-spill-")
        where = (self.size, len(frame))
        os.pwrite(self.file.fileno(), frame, self.size)
        self.size += len(frame)
        return where

    def get(self, frame: bytes | memoryview | tuple[int, int]) -> bytes | memoryview:
        """The frame itself, or read back from the file (any thread)."""
        if not isinstance(frame, tuple):
            return frame
        offset, length = frame
        data = os.pread(self.file.fileno(), length, offset)
        if len(data) != length:
            raise OSError(f"spill file truncated at {offset}")
        return data

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
