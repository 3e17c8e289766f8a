"""Rebuilding files and tensors from a manifest: chunks decoded in parallel, every byte verified."""

from __future__ import annotations

import fnmatch
import os
import secrets
import stat
from concurrent.futures import Executor
from pathlib import Path
from typing import Callable, Iterator

import blake3
import numpy as np

from .errors import AlreadyExists, CorruptObject, UnsafePath
from .formats.base import DTYPES
from .objects import SEG_CHUNKS, SEG_INLINE, FileRecipe, Manifest, TensorEntry
from .parallel import ordered_map
from .paths import check_paths
from .store import Store

Progress = Callable[[int], None]


def _segment_chunks(manifest: Manifest, recipe: FileRecipe) -> Iterator[bytes | memoryview]:
    """Inline runs as memoryviews, chunk ids as bytes: `file_pieces` tells them apart by type."""
    for seg in recipe.segments:
        if seg[0] == SEG_INLINE:
            yield memoryview(seg[1])
        elif seg[0] == SEG_CHUNKS:
            yield from seg[3]
        else:
            yield from manifest.tensors[seg[1]].chunks


def file_pieces(store: Store, manifest: Manifest, recipe: FileRecipe, pool: Executor) -> Iterator[memoryview]:
    """The file's bytes in order, as verified pieces."""
    def fetch(item: bytes | memoryview) -> memoryview:
        return item if isinstance(item, memoryview) else store.get_chunk(item)

    return ordered_map(pool, fetch, _segment_chunks(manifest, recipe))


def read_tensor(store: Store, entry: TensorEntry, pool: Executor) -> np.ndarray:
    out = np.empty(entry.nbytes, dtype=np.uint8)
    for (_, start, end), piece in zip(entry.chunk_ranges(), ordered_map(pool, store.get_chunk, entry.chunks)):
        out[start:end] = np.frombuffer(piece, dtype=np.uint8)
    return out.view(DTYPES[entry.dtype]).reshape(entry.shape)


def select(manifest: Manifest, include: list[str] | None) -> list[FileRecipe]:
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


def write_temp(store: Store, manifest: Manifest, recipe: FileRecipe, dest: Path, pool: Executor,
               progress: Progress) -> tuple[Path, Path]:
    """Write one file under a temporary name next to its target and verify its whole-file hash.

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
        if recipe.size:
            os.posix_fallocate(fd, 0, recipe.size)  # a full disk fails here, before any decoding work
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        written = 0
        with os.fdopen(fd, "wb", buffering=0) as f:
            for piece in file_pieces(store, manifest, recipe, pool):
                f.write(piece)
                hasher.update(piece)
                written += len(piece)
                progress(len(piece))
        got = hasher.digest()
        if got != recipe.hash or written != recipe.size:
            raise CorruptObject("file", recipe.hash.hex(), got.hex(), detail=recipe.path)
    except BaseException:
        _unlink(tmp)
        raise
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
