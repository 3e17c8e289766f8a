"""Rebuilding files and tensors from a manifest: chunks decoded in parallel, every byte verified."""

from __future__ import annotations

import errno
import fnmatch
import os
import secrets
import stat
from concurrent.futures import Executor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import AlreadyExists, CorruptObject, UnsafePath
from ..formats.base import DTYPES
from ..model.objects import ChunkRun, FileRecipe, Inline, Manifest, TensorEntry
from ..model.paths import check_paths
from ..storage.store import Store
from .parallel import ordered_map

Progress = Callable[[int], None]


def _segment_chunks(manifest: Manifest, recipe: FileRecipe) -> Iterator[bytes | memoryview]:
    """Inline runs as memoryviews, chunk ids as bytes: `file_pieces` tells them apart by type."""
    for seg in recipe.segments:
        if isinstance(seg, Inline):
            yield memoryview(seg.data)
        elif isinstance(seg, ChunkRun):
            yield from seg.chunks
        else:
            yield from manifest.tensors[seg.index].chunks


def file_pieces(store: Store, manifest: Manifest, recipe: FileRecipe, pool: Executor) -> Iterator[memoryview]:
    """The file's bytes in order, as verified pieces."""
    def fetch(item: bytes | memoryview) -> memoryview:
        return item if isinstance(item, memoryview) else store.get_chunk(item)

    return ordered_map(pool, fetch, _segment_chunks(manifest, recipe))


def read_tensor(store: Store, entry: TensorEntry, pool: Executor) -> np.ndarray:
    """A stored tensor read back whole from its chunks, as an array of its dtype and shape."""
    out = np.empty(entry.nbytes, dtype=np.uint8)
    for (_, start, end), piece in zip(entry.chunk_ranges(), ordered_map(pool, store.get_chunk, entry.chunks)):
        out[start:end] = np.frombuffer(piece, dtype=np.uint8)
    return out.view(DTYPES[entry.dtype]).reshape(entry.shape)


def select(manifest: Manifest, include: list[str] | None) -> list[FileRecipe]:
    """The manifest's files whose paths match one of the `include` globs (case-sensitive); all files when none."""
    if not include:
        return list(manifest.files)
    return [f for f in manifest.files if any(fnmatch.fnmatchcase(f.path, g) for g in include)]


def _safe_parent(dest: Path, rel: str) -> Path:
    """Create the parent directories of `rel` under `dest`, refusing any that is a symlink or a file."""
    cur = dest
    for part in rel.split("/")[:-1]:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            cur.mkdir()
            continue
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePath(f"refusing to write {rel!r}: {cur} is a symlink")
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePath(f"refusing to write {rel!r}: {cur} is not a directory")
    return cur


def _placed_pieces(manifest: Manifest, recipe: FileRecipe) -> Iterator[tuple[int, bytes | memoryview]]:
    """(offset in the file, chunk id or inline bytes) of every piece of the file."""
    pos = 0
    for seg in recipe.segments:
        if isinstance(seg, Inline):
            yield pos, memoryview(seg.data)
            pos += len(seg.data)
        elif isinstance(seg, ChunkRun):
            for k, cid in enumerate(seg.chunks):
                yield pos + k * seg.chunk_size, cid
            pos += seg.nbytes
        else:
            entry = manifest.tensors[seg.index]
            for cid, start, _ in entry.chunk_ranges():
                yield pos + start, cid
            pos += entry.nbytes


def write_temp(store: Store, manifest: Manifest, recipe: FileRecipe, dest: Path, pool: Executor,
               progress: Progress) -> tuple[Path, Path]:
    """Write one file under a temporary name next to its target. Workers decode, verify (every chunk against its
    id) and `pwrite` each piece at its offset in the preallocated file; the main thread only keeps count.

    Returns (temporary path, final path); the caller renames. The temporary name is short so that any legal final
    name (up to 255 bytes) still fits.
    """
    parent = _safe_parent(dest, recipe.path)
    target = parent / recipe.path.rsplit("/", 1)[-1]
    if target.is_dir() and not target.is_symlink():
        raise UnsafePath(f"refusing to write {recipe.path!r}: a directory is in the way")
    tmp = parent / f".ckstore-tmp-{os.getpid()}-{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            if recipe.size:
                os.posix_fallocate(fd, 0, recipe.size)  # a full disk fails here, before any decoding work
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # filesystems without fallocate: just write
                raise

        def put(item: tuple[int, bytes | memoryview]) -> int:
            offset, piece = item
            data = piece if isinstance(piece, memoryview) else store.get_chunk(piece, keep=False)
            view = memoryview(data)
            while view:  # pwrite may write less than asked (signals, some filesystems)
                done = os.pwrite(fd, view, offset)
                view, offset = view[done:], offset + done
            return len(data)

        written = 0
        for n in ordered_map(pool, put, _placed_pieces(manifest, recipe)):
            written += n
            progress(n)
        if written != recipe.size:
            raise CorruptObject("file", recipe.hash.hex(), "?", detail=f"{recipe.path}: recipe covers {written} "
                                f"of {recipe.size} bytes")
    except BaseException:
        os.close(fd)
        _unlink(tmp)
        raise
    os.close(fd)
    return tmp, target


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def checkout(store: Store, manifest: Manifest, dest: Path, pool: Executor, *, include: list[str] | None = None,
             force: bool = False, progress: Progress | None = None) -> list[FileRecipe]:
    """Write the selected files all-or-nothing: every file is written and verified under a temporary name first,
    and only when all are good do they get their final names (a failure leaves no file of this checkout behind)."""
    files = select(manifest, include)
    check_paths([f.path for f in manifest.files])
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise UnsafePath(f"checkout destination {dest} is not a directory")
    if not force and dest.is_dir() and any(dest.iterdir()):
        raise AlreadyExists(f"{dest} is not empty", hint="check out into an empty directory, or pass --force")
    dest.mkdir(parents=True, exist_ok=True)
    written: list[tuple[Path, Path]] = []
    try:
        for recipe in files:
            written.append(write_temp(store, manifest, recipe, dest, pool, progress or (lambda n: None)))
    except BaseException:
        for tmp, _ in written:
            _unlink(tmp)
        raise
    for tmp, target in written:
        os.replace(tmp, target)
    return files
