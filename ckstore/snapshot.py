"""Snapshotting: scanned files -> chunks hashed and encoded on a thread pool -> new frames in packs -> a Manifest."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable, Iterable

import blake3

from . import codec
from .chunking import INLINE_MAX, chunk_bytes_for, split
from .formats.base import ScannedFile, itemsize
from .parallel import ordered_map
from .objects import SEG_CHUNKS, SEG_INLINE, SEG_TENSOR, FileRecipe, Manifest, TensorEntry, hash_bytes
from .store import ChunkWriter, Store

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class SnapshotSettings:
    chunk_size: int
    zstd_level: int


@dataclass(slots=True)
class _Job:
    data: memoryview
    width: int


def _process(store: Store, job: _Job, level: int) -> tuple[bytes, bytes | None]:
    """Hash a chunk and, when the store lacks it, encode its frame (runs on a worker thread)."""
    cid = hash_bytes(job.data)
    if store.has_chunk(cid):
        return cid, None
    return cid, codec.encode(job.data, job.width, level)


class Snapshotter:
    def __init__(self, store: Store, writer: ChunkWriter, pool: Executor, settings: SnapshotSettings,
                 progress: Progress | None = None) -> None:
        self.store, self.writer, self.pool, self.settings = store, writer, pool, settings
        self.progress = progress or (lambda n: None)

    def _store_chunks(self, pieces: list[memoryview], width: int) -> list[bytes]:
        ids = []
        level = self.settings.zstd_level
        work = ordered_map(self.pool, lambda j: _process(self.store, j, level), (_Job(p, width) for p in pieces))
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
                ids = self._store_chunks(split(span.data, cb), width)
                segments.append((SEG_TENSOR, len(tensors)))
                tensors.append(TensorEntry(span.tensor.name, scanned.path, span.tensor.dtype, span.tensor.shape,
                                           span.offset, span.nbytes, cb, tuple(ids)))
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

    def manifest(self, files: Iterable[ScannedFile], tree: object = None) -> Manifest:
        tensors: list[TensorEntry] = []
        recipes = [self.file(f, tensors) for f in files]
        order = sorted(range(len(recipes)), key=lambda i: recipes[i].path)
        return Manifest(tuple(recipes[i] for i in order), tuple(tensors), tree)


def _merge_inline(segments: list[tuple]) -> list[tuple]:
    """Adjacent inline runs become one (fewer, larger segments in the manifest)."""
    out: list[tuple] = []
    for seg in segments:
        if seg[0] == SEG_INLINE and out and out[-1][0] == SEG_INLINE:
            out[-1] = (SEG_INLINE, out[-1][1] + seg[1])
        else:
            out.append(seg)
    return out
