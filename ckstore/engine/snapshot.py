"""Snapshotting: scanned files -> chunks hashed and encoded on a thread pool -> new frames in packs -> a Manifest."""

from __future__ import annotations

import functools
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import blake3

from ..formats.base import (ScannedFile, TensorInfo, drop_range, element_dtype, is_blocked, itemsize, mapping_of,
                            values)
from ..model import codec, stats
from ..model.chunking import INLINE_MAX, chunk_bytes_for, cut_by_content, split
from ..model.objects import (ChunkRun, FileRecipe, Inline, Manifest, Segment, TensorEntry, TensorRef)
from ..storage.store import PackSink, Store
from .parallel import ordered_map

Progress = Callable[[int], None]
HASH_BLOCK = 4 << 20  # the whole-file hash maps in and drops this much at a time


@dataclass(frozen=True, slots=True)
class SnapshotSettings:
    """How a snapshot encodes chunks: chunk size (bytes), zstd level, the longest delta chain allowed, and whether
    opaque runs are cut by content (the repository's "cdc" feature) or at multiples of the chunk size."""

    chunk_size: int
    zstd_level: int
    max_delta_depth: int = 4  # a full frame at least every few versions: reads decode at most this many deltas
    cdc: bool = False


@dataclass(frozen=True, slots=True)
class CachedFile:
    """A file known unchanged since an earlier snapshot (stat cache hit): its recipe and tensors are reused."""

    recipe: FileRecipe
    tensors: tuple[TensorEntry, ...]  # TensorRef segments of `recipe` index into this tuple


@dataclass(slots=True)
class _Job:
    data: memoryview
    width: int
    base: bytes | None = None  # the same chunk of the same tensor in the parent commit
    dtype: str | None = None  # the tensor's dtype when the chunk's statistics are wanted


@dataclass(slots=True)
class _Span:
    """A tensor or opaque run being snapshotted: its chunks come back from the pool in order."""

    span: object
    pieces: list[memoryview]
    width: int  # the codec's element width
    bases: list[bytes | None]
    ids: list[bytes] = field(default_factory=list)
    partials: list[stats.Partial | None] = field(default_factory=list)
    done: int = 0  # bytes of the span whose chunks are back


class Snapshotter:
    """Every chunk of a commit goes through one ordered stream on the pool (hash, statistics, encode), so the
    workers stay busy across tensor and file boundaries; whole-file hashes run beside it on their own thread."""

    def __init__(self, store: Store, writer: PackSink, pool: Executor, settings: SnapshotSettings,
                 progress: Progress | None = None, parent: Manifest | None = None) -> None:
        self.store, self.writer, self.pool, self.settings = store, writer, pool, settings
        self.progress = progress or (lambda n: None)
        self.parent_tensors: dict[tuple[str, str] | str, TensorEntry] = {}
        for t in parent.tensors if parent else ():
            self.parent_tensors[(t.file, t.name)] = t
            self.parent_tensors.setdefault(t.name, t)  # re-sharded files keep their tensor names

    def _process(self, job: _Job) -> tuple[bytes, bytes | None, stats.Partial | None]:
        """Hash a chunk, take its statistics unless it equals its base, and, when the store lacks it, encode its
        frame, sealed in an encrypted repository (runs on a worker thread)."""
        scheme = self.store.scheme
        cid = scheme.chunk_id(job.data)
        part = None
        if job.dtype is not None and cid != job.base:
            part = stats.partial(values(job.dtype, job.data))
        if self.store.has_chunk(cid) or self.store.revive(cid):  # a tombstoned copy comes back: no new bytes
            return cid, None, part
        level = self.settings.zstd_level
        if job.base is not None and job.base != cid:
            depth, plain = self.store.delta_chain(job.base, self.settings.max_delta_depth)
            if depth < self.settings.max_delta_depth:
                base = self.store.get_chunk(job.base, keep=False)
                return cid, scheme.seal_frame(cid, codec.encode(job.data, job.width, level, base=base,
                                                                base_id=job.base, plain_hint=plain)), part
        return cid, scheme.seal_frame(cid, codec.encode(job.data, job.width, level)), part

    def _parent(self, path: str, name: str) -> TensorEntry | None:
        return self.parent_tensors.get((path, name)) or self.parent_tensors.get(name)

    def _plan(self, scanned: ScannedFile) -> list[_Span]:
        """Cut a file's tensors and large opaque runs into chunks, each paired with its delta base."""
        out = []
        size = self.settings.chunk_size
        mm = mapping_of(scanned)
        for span in scanned.spans:
            if span.tensor is None:
                if span.nbytes > INLINE_MAX:
                    pieces = _cut(span, mm) if self.settings.cdc else split(span.data, size)
                    out.append(_Span(span, pieces, 1, [None] * len(pieces)))
                continue
            step = chunk_bytes_for(itemsize(span.tensor.dtype), size)  # whole elements (or blocks) per chunk
            pieces = split(span.data, step)
            t = self._parent(scanned.path, span.tensor.name)
            same_layout = (t is not None and t.dtype == span.tensor.dtype and t.nbytes == span.nbytes
                           and t.chunk_bytes == step)
            # quantized blocks mix scales and packed codes: their byte planes do not line up, so plain bytes
            width = 1 if is_blocked(span.tensor.dtype) else itemsize(span.tensor.dtype)
            out.append(_Span(span, pieces, width, list(t.chunks) if same_layout else [None] * len(pieces)))
        return out

    def _jobs(self, plans: list[list[_Span]]) -> Iterator[_Job]:
        for spans in plans:
            for sp in spans:
                dtype = _stats_dtype(sp.span.tensor)
                for piece, base in zip(sp.pieces, sp.bases):
                    yield _Job(piece, sp.width, base, dtype)

    def _stats(self, path: str, sp: _Span) -> dict:
        """Statistics of a tensor: copied from the parent when its chunks are the same and its statistics are
        current, else merged per chunk (chunks equal to their base skipped statistics on the stream; they are
        computed now, so an older build's statistics without a histogram are replaced in full)."""
        info = sp.span.tensor
        t = self._parent(path, info.name)
        if (t is not None and t.chunks == tuple(sp.ids) and t.dtype == info.dtype and t.stats
                and not stats.stale(t.stats)):
            return t.stats
        dtype = _stats_dtype(info)
        if dtype is None:
            return {}
        missing = [k for k, p in enumerate(sp.partials) if p is None]
        filled = ordered_map(self.pool, lambda k: stats.partial(values(dtype, sp.pieces[k])), missing)
        for k, p in zip(missing, filled):
            sp.partials[k] = p
        return stats.finish(functools.reduce(stats.merge, sp.partials, stats.Partial()))

    def _recipe(self, scanned: ScannedFile, spans: list[_Span], file_hash: bytes,
                tensors: list[TensorEntry]) -> FileRecipe:
        chunked = {id(sp.span): sp for sp in spans}
        segments: list[Segment] = []
        for span in scanned.spans:
            sp = chunked.get(id(span))
            if span.tensor is not None:
                info = span.tensor
                segments.append(TensorRef(len(tensors)))
                tensors.append(TensorEntry(info.name, scanned.path, info.dtype, info.shape, span.offset, span.nbytes,
                                           chunk_bytes_for(itemsize(info.dtype), self.settings.chunk_size),
                                           tuple(sp.ids),
                                           self._stats(scanned.path, sp)))
            elif sp is None:
                segments.append(Inline(bytes(span.data)))
                self.progress(span.nbytes)
            elif self.settings.cdc:
                segments.append(ChunkRun(span.nbytes, 0, tuple(sp.ids), tuple(len(p) for p in sp.pieces)))
            else:
                segments.append(ChunkRun(span.nbytes, self.settings.chunk_size, tuple(sp.ids)))
        return FileRecipe(scanned.path, scanned.size, file_hash, tuple(_merge_inline(segments)))

    def _snapshot(self, scanned: list[ScannedFile]) -> list[tuple[list[_Span], bytes]]:
        """Run every chunk of `scanned` through the pool; returns each file's spans (ids and partials filled in)
        and whole-file hash."""
        plans = [self._plan(f) for f in scanned]
        pages = _Pages(scanned)
        with ThreadPoolExecutor(1, thread_name_prefix="ckstore-filehash") as hasher:
            hashes = [hasher.submit(_file_hash, f, functools.partial(pages.hashed, i)) for i, f in enumerate(scanned)]
            for h in hashes:  # a failed hash must not leave the stream waiting for it
                h.add_done_callback(_release_on_error(pages))
            try:
                self._stream(plans, pages)
            except BaseException:
                for h in hashes:
                    h.cancel()
                pages.release()
                raise
            return [(spans, h.result()) for spans, h in zip(plans, hashes)]

    def _stream(self, plans: list[list[_Span]], pages: _Pages) -> None:
        slots = ((i, sp, len(p)) for i, spans in enumerate(plans) for sp in spans for p in sp.pieces)
        work = ordered_map(self.pool, self._process, self._jobs(plans))
        current = 0
        for (i, sp, n), (cid, frame, part) in zip(slots, work):
            for done in range(current, i):  # the stream has left these files: never hold their hash back
                pages.consumed(done, 1 << 62)
            current = i
            if frame is not None and cid not in self.writer:
                self.writer.add(cid, frame, n, looked_up=True)  # _process found the store without it
            sp.ids.append(cid)
            sp.partials.append(part)
            sp.done += n
            self.progress(n)
            pages.consumed(i, sp.span.offset + sp.done)
        pages.release()  # every chunk is read: the hash may finish the files

    def manifest(self, files: Iterable[ScannedFile | CachedFile], tree: object = None) -> Manifest:
        """Build the manifest; `self.fresh` then holds each newly read file as a CachedFile for the stat cache."""
        files = list(files)
        scanned = [f for f in files if not isinstance(f, CachedFile)]
        done = iter(self._snapshot(scanned))
        tensors: list[TensorEntry] = []
        recipes = []
        self.fresh: list[CachedFile] = []
        for f in files:
            start = len(tensors)
            if isinstance(f, CachedFile):
                recipes.append(_reindex(f.recipe, start))
                tensors.extend(f.tensors)
                self.progress(f.recipe.size)
            else:
                spans, file_hash = next(done)
                recipe = self._recipe(f, spans, file_hash, tensors)
                recipes.append(recipe)
                self.fresh.append(CachedFile(_reindex(recipe, -start), tuple(tensors[start:])))
        order = sorted(range(len(recipes)), key=lambda i: recipes[i].path)
        return Manifest(tuple(recipes[i] for i in order), tuple(tensors), tree)


def _cut(span, mm) -> list[memoryview]:
    """An opaque span cut by content. The cut reads every page, so what it has passed leaves our resident set as
    it goes (the page cache keeps it for the chunk stream)."""
    pieces, pos, dropped = [], span.offset, span.offset
    for piece in cut_by_content(span.data):
        pieces.append(piece)
        pos += len(piece)
        if mm is not None and pos - dropped >= HASH_BLOCK:
            dropped = drop_range(mm, dropped, pos)
    if mm is not None:
        drop_range(mm, dropped, pos)
    return pieces


def _stats_dtype(info: TensorInfo | None) -> str | None:
    """The tensor's dtype when it gets statistics (see formats.base.values), else None."""
    return None if info is None or element_dtype(info.dtype) is None else info.dtype


def _file_hash(scanned: ScannedFile, progress: Callable[[int], None]) -> bytes:
    h = blake3.blake3()  # one thread: it runs beside the chunk workers, not instead of them
    for span in scanned.spans:
        for k in range(0, len(span.data), HASH_BLOCK):
            block = span.data[k:k + HASH_BLOCK]
            h.update(block)
            progress(span.offset + k + len(block))
    progress(1 << 62)
    return h.digest()


def _release_on_error(pages: _Pages) -> Callable:
    def done(future) -> None:
        if not future.cancelled() and future.exception() is not None:
            pages.release(hashes=True)
    return done


class _Pages:
    """Takes each mapped input's pages out of the process's resident set once both of its readers are past them:
    the chunk stream and the whole-file hash, each going through the file in order. Without it a commit's RSS
    grew by the whole input; dropping after either reader alone made the other fault every page in again."""

    AHEAD = 2 * HASH_BLOCK  # the hash (0.4 ms/MiB) would otherwise map in the whole file long before the chunks

    def __init__(self, files: list[ScannedFile]) -> None:
        self.maps = [mapping_of(f) for f in files]
        self.hash_pos = [0] * len(files)
        self.read_pos = [0] * len(files)
        self.dropped = [0] * len(files)
        self.cond = threading.Condition()

    def hashed(self, i: int, pos: int) -> None:
        """Called by the hash thread; it waits while it is too far ahead of the chunk stream."""
        with self.cond:
            self.hash_pos[i] = pos
            self._drop(i)
            self.cond.notify_all()
            while self.maps[i] is not None and self.hash_pos[i] - self.read_pos[i] > self.AHEAD:
                self.cond.wait()

    def consumed(self, i: int, pos: int) -> None:
        """Called by the chunk stream; it waits while it is too far ahead of the hash (chunks already stored only
        need hashing, and two workers outrun the one hash thread)."""
        with self.cond:
            self.read_pos[i] = pos
            self._drop(i)
            self.cond.notify_all()
            while self.maps[i] is not None and self.read_pos[i] - self.hash_pos[i] > self.AHEAD:
                self.cond.wait()

    def release(self, hashes: bool = False) -> None:
        """Stop all waiting: the stream is done (or failed), or with `hashes` the hash thread is."""
        with self.cond:
            for i in range(len(self.maps)):
                if hashes:
                    self.hash_pos[i] = 1 << 62
                else:
                    self.read_pos[i] = 1 << 62
                self._drop(i)
            self.cond.notify_all()

    def _drop(self, i: int) -> None:
        mm = self.maps[i]
        if mm is None:
            return
        upto = min(self.hash_pos[i], self.read_pos[i], len(mm))
        if upto - self.dropped[i] >= HASH_BLOCK or upto == len(mm) > self.dropped[i]:
            self.dropped[i] = drop_range(mm, self.dropped[i], upto)


def _reindex(recipe: FileRecipe, shift: int) -> FileRecipe:
    segs = tuple(TensorRef(s.index + shift) if isinstance(s, TensorRef) else s for s in recipe.segments)
    return FileRecipe(recipe.path, recipe.size, recipe.hash, segs)


def _merge_inline(segments: list[Segment]) -> list[Segment]:
    """Adjacent inline runs become one (fewer, larger segments in the manifest)."""
    out: list[tuple] = []
    for seg in segments:
        if isinstance(seg, Inline) and out and isinstance(out[-1], Inline):
            out[-1] = Inline(out[-1].data + seg.data)
        else:
            out.append(seg)
    return out
