"""Snapshotting: scanned files -> chunks hashed and encoded on a thread pool -> new frames in packs -> a Manifest."""

from __future__ import annotations

import functools
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable, Iterable

import blake3
import numpy as np

from . import codec, stats
from .chunking import INLINE_MAX, chunk_bytes_for, split
from .formats.base import DTYPES, ScannedFile, TensorInfo, itemsize
from .objects import SEG_CHUNKS, SEG_INLINE, SEG_TENSOR, FileRecipe, Manifest, TensorEntry, hash_bytes
from .parallel import ordered_map
from .store import ChunkWriter, Store

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class SnapshotSettings:
    chunk_size: int
    zstd_level: int
    max_delta_depth: int = 4  # a full frame at least every few versions: reads decode at most this many deltas


@dataclass(frozen=True, slots=True)
class CachedFile:
    """A file known unchanged since an earlier snapshot (stat cache hit): its recipe and tensors are reused."""

    recipe: FileRecipe
    tensors: tuple[TensorEntry, ...]  # SEG_TENSOR segments of `recipe` index into this tuple


@dataclass(slots=True)
class _Job:
    data: memoryview
    width: int
    base: bytes | None = None  # the same chunk of the same tensor in the parent commit


class Snapshotter:
    def __init__(self, store: Store, writer: ChunkWriter, pool: Executor, settings: SnapshotSettings,
                 progress: Progress | None = None, parent: Manifest | None = None) -> None:
        self.store, self.writer, self.pool, self.settings = store, writer, pool, settings
        self.progress = progress or (lambda n: None)
        self.parent_tensors: dict[tuple[str, str] | str, TensorEntry] = {}
        for t in parent.tensors if parent else ():
            self.parent_tensors[(t.file, t.name)] = t
            self.parent_tensors.setdefault(t.name, t)  # re-sharded files keep their tensor names

    def _process(self, job: _Job) -> tuple[bytes, bytes | None]:
        """Hash a chunk and, when the store lacks it, encode its frame (runs on a worker thread)."""
        cid = hash_bytes(job.data)
        if self.store.has_chunk(cid):
            return cid, None
        level = self.settings.zstd_level
        if job.base is not None and job.base != cid:
            depth = self.store.delta_depth(job.base, self.settings.max_delta_depth)
            if depth < self.settings.max_delta_depth:
                base = self.store.get_chunk(job.base)
                return cid, codec.encode(job.data, job.width, level, base=base, base_id=job.base)
        return cid, codec.encode(job.data, job.width, level)

    def _bases(self, path: str, span: object, cb: int, count: int) -> list[bytes | None]:
        """Parent chunk ids to delta against, position by position, when the parent had the same tensor layout."""
        t = self.parent_tensors.get((path, span.tensor.name)) or self.parent_tensors.get(span.tensor.name)
        if t is None or t.dtype != span.tensor.dtype or t.chunk_bytes != cb or t.nbytes != span.nbytes:
            return [None] * count
        return list(t.chunks)

    def _stats(self, path: str, info: TensorInfo, pieces: list[memoryview], ids: tuple[bytes, ...]) -> dict:
        """Statistics of a tensor: copied from the parent when its chunks are the same, else computed per chunk."""
        t = self.parent_tensors.get((path, info.name)) or self.parent_tensors.get(info.name)
        if t is not None and t.chunks == ids and t.dtype == info.dtype and t.stats:
            return t.stats
        dtype = DTYPES[info.dtype]
        if dtype.kind == "c":
            return {}
        parts = ordered_map(self.pool, lambda p: stats.partial(np.frombuffer(p, dtype=dtype)), pieces)
        return stats.finish(functools.reduce(stats.merge, parts, stats.Partial()))

    def _store_chunks(self, pieces: list[memoryview], width: int, bases: list[bytes | None] | None = None) -> list[bytes]:
        ids = []
        jobs = (_Job(p, width, b) for p, b in zip(pieces, bases or [None] * len(pieces)))
        work = ordered_map(self.pool, self._process, jobs)
        for piece, (cid, frame) in zip(pieces, work):
            if frame is not None and cid not in self.writer:
                self.writer.add(cid, frame, len(piece))
            ids.append(cid)
            self.progress(len(piece))
        return ids

    def file(self, scanned: ScannedFile, tensors: list[TensorEntry]) -> FileRecipe:
        segments: list[tuple] = []
        size = self.settings.chunk_size
        for span in scanned.spans:
            if span.tensor is not None:
                width = itemsize(span.tensor.dtype)
                cb = chunk_bytes_for(width, size)
                pieces = split(span.data, cb)
                ids = tuple(self._store_chunks(pieces, width, self._bases(scanned.path, span, cb, len(pieces))))
                segments.append((SEG_TENSOR, len(tensors)))
                tensors.append(TensorEntry(span.tensor.name, scanned.path, span.tensor.dtype, span.tensor.shape,
                                           span.offset, span.nbytes, cb, ids,
                                           self._stats(scanned.path, span.tensor, pieces, ids)))
            elif span.nbytes <= INLINE_MAX:
                segments.append((SEG_INLINE, bytes(span.data)))
                self.progress(span.nbytes)
            else:
                ids = self._store_chunks(split(span.data, size), 1)
                segments.append((SEG_CHUNKS, span.nbytes, size, tuple(ids)))
        return FileRecipe(scanned.path, scanned.size, self._file_hash(scanned), tuple(_merge_inline(segments)))

    @staticmethod
    def _file_hash(scanned: ScannedFile) -> bytes:
        h = blake3.blake3(max_threads=blake3.blake3.AUTO)
        for span in scanned.spans:
            h.update(span.data)
        return h.digest()

    def manifest(self, files: Iterable[ScannedFile | CachedFile], tree: object = None) -> Manifest:
        """Build the manifest; `self.fresh` then holds each newly read file as a CachedFile for the stat cache."""
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
                recipe = self.file(f, tensors)
                recipes.append(recipe)
                self.fresh.append(CachedFile(_reindex(recipe, -start), tuple(tensors[start:])))
        order = sorted(range(len(recipes)), key=lambda i: recipes[i].path)
        return Manifest(tuple(recipes[i] for i in order), tuple(tensors), tree)


def _reindex(recipe: FileRecipe, shift: int) -> FileRecipe:
    segs = tuple((SEG_TENSOR, s[1] + shift) if s[0] == SEG_TENSOR else s for s in recipe.segments)
    return FileRecipe(recipe.path, recipe.size, recipe.hash, segs)


def _merge_inline(segments: list[tuple]) -> list[tuple]:
    """Adjacent inline runs become one (fewer, larger segments in the manifest)."""
    out: list[tuple] = []
    for seg in segments:
        if seg[0] == SEG_INLINE and out and out[-1][0] == SEG_INLINE:
            out[-1] = (SEG_INLINE, out[-1][1] + seg[1])
        else:
            out.append(seg)
    return out
