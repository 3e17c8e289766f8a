"""Checking out while the data arrives (`clone --checkout`): the files of one commit are written as their chunks
are fetched and verified, so the newest version is decoded once, by the fetch, instead of again by a checkout.

The guarantees are `restore.checkout`'s: every file is written under a temporary name through directory
descriptors below the destination, each piece is a chunk verified against its id (the fetch's check), every
file's length and BLAKE3 are checked (read back from the file: the chunks arrive out of file order) before any
file gets its final name, and a failure leaves no file and no temporary file behind.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict, defaultdict
from concurrent.futures import Executor
from pathlib import Path

import blake3

from ..errors import CorruptObject
from ..model.objects import Manifest
from ..model.paths import check_paths
from ..storage.store import Store
from .restore import (
    DestTree,
    Progress,
    TempFile,
    create_temp,
    discard,
    file_mismatch,
    open_dest,
    placed_pieces,
    publish,
    put_piece,
)

OPEN_FILES = 64          # temporary files kept open at once (a directory of thousands of files reopens them)
READ_BACK = 8 << 20      # bytes per read when hashing a written file


class Prefill:
    """The files of `manifest` being written into `dest` while their chunks arrive."""

    def __init__(self, manifest: Manifest, dest: Path) -> None:
        check_paths([f.path for f in manifest.files])
        self.manifest = manifest
        self.tree = DestTree(open_dest(dest, force=False), dest)
        self.temps: list[TempFile] = []
        self.fds: OrderedDict[int, int] = OrderedDict()      # file index -> open descriptor
        self.places: dict[bytes, list[tuple[int, int, int]]] = defaultdict(list)  # chunk -> (file, offset, length)
        self.done: set[bytes] = set()
        self.closed = False
        self.lock = threading.Lock()
        try:
            for i, recipe in enumerate(manifest.files):
                temp, fd = create_temp(recipe, self.tree)
                self.temps.append(temp)
                self._keep(i, fd)
                for offset, length, piece in placed_pieces(manifest, recipe):
                    if not isinstance(piece, memoryview):
                        self.places[piece].append((i, offset, length))
        except BaseException:
            self.abort()
            raise

    def put(self, chunk: bytes, raw: memoryview) -> None:
        """Write a verified chunk at every place the files have it (from any of the fetch's threads, each writing
        through its own duplicate of the descriptor: another thread may close the shared one meanwhile)."""
        for i, offset, length in self.places.get(chunk, ()):
            with self.lock:
                fd = os.dup(self._fd(i))
            try:
                put_piece(fd, self.manifest.files[i], offset, length, raw)
            finally:
                os.close(fd)
        with self.lock:
            self.done.add(chunk)

    def finish(self, store: Store, pool: Executor, progress: Progress | None = None) -> None:
        """Write what did not arrive (inline bytes, chunks the store held already), check every file's length
        and BLAKE3 from its bytes on disk, and give them their final names; on any failure, nothing is left."""
        progress = progress or (lambda n: None)
        try:
            for i, recipe in enumerate(self.manifest.files):
                fd = self._fd(i)
                for offset, length, piece in placed_pieces(self.manifest, recipe):
                    if isinstance(piece, memoryview):
                        put_piece(fd, recipe, offset, length, piece)
                    elif piece not in self.done:
                        put_piece(fd, recipe, offset, length, store.get_chunk(piece, keep=False))
                self._check(i, fd, progress)
            self._close_all()
            publish(self.tree, self.temps)
        except BaseException:
            self.abort()
            raise
        self.closed = True
        self.tree.close()

    def _check(self, i: int, fd: int, progress: Progress) -> None:
        recipe = self.manifest.files[i]
        size = os.fstat(fd).st_size
        if size != recipe.size:
            raise CorruptObject("file", recipe.hash.hex(), "?", detail=f"{recipe.path}: {size} bytes written "
                                f"where the recipe has {recipe.size}")
        hasher, pos = blake3.blake3(max_threads=blake3.blake3.AUTO), 0
        while pos < size:
            block = os.pread(fd, min(READ_BACK, size - pos), pos)
            if not block:
                break
            hasher.update(block)
            pos += len(block)
            progress(len(block))
        if (got := hasher.digest()) != recipe.hash:
            raise file_mismatch(recipe, got)

    def abort(self) -> None:
        """Remove every temporary file and close the destination (again: nothing)."""
        if self.closed:
            return
        self.closed = True
        self._close_all()
        for temp in self.temps:
            discard(self.tree, temp)
        self.temps = []
        self.tree.remove_made()
        self.tree.close()

    def _keep(self, i: int, fd: int) -> None:
        self.fds[i] = fd
        while len(self.fds) > OPEN_FILES:
            os.close(self.fds.popitem(last=False)[1])

    def _fd(self, i: int) -> int:
        fd = self.fds.get(i)
        if fd is not None:
            self.fds.move_to_end(i)
            return fd
        temp = self.temps[i]
        dfd = self.tree.fd(temp.parts, temp.rel, create=False)
        fd = os.open(temp.tmp, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        self._keep(i, fd)
        return fd

    def _close_all(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
