"""The LMDB cache: chunk id -> (pack, offset, length, raw length), indexed packs, stat-cache entries and commit
encodings. Only a cache: rebuilt from the packs' .idx files whenever it is found damaged, never believed blindly.

A damaged environment is set aside and rebuilt, with a CacheRebuilt warning, when it fails to open, when its data
file is shorter than its meta pages say (mapping it would end in SIGBUS at the first read past the end), or when
LMDB raises while it is read; the store then re-indexes the packs (`on_rebuild`)."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import lmdb

from ..errors import CacheRebuilt, RepositoryError
from ..fs.fileio import io_step
from .packs import Entry

LOCATION = struct.Struct("<32sQII")
MAP_SIZE = 1 << 36  # address space only; the file grows as needed
_META_MAGIC = 0xBEEFC0DE
# LMDB's meta pages (the first two pages): magic at 16, the page size in the free DB's md_pad at 40, then
# mm_last_pg and mm_txnid at 136 (lmdb.h: MDB_meta after a 16-byte page header)
_META = struct.Struct("<I")
_META_TAIL = struct.Struct("<QQ")


def truncated(path: Path) -> str | None:
    """Why the LMDB data file at `path` cannot be mapped safely (shorter than its newest meta page says, or with
    no valid meta page), or None when it is whole or absent."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(2 * 65536)
    except FileNotFoundError:
        return None
    metas = []
    for page in (0, 4096, 8192, 16384, 32768, 65536):
        if len(head) < page + 152 or _META.unpack_from(head, page + 16)[0] != _META_MAGIC:
            continue
        psize = _META.unpack_from(head, page + 40)[0]
        last_pg, txnid = _META_TAIL.unpack_from(head, page + 136)
        if page in (0, psize):
            metas.append((txnid, last_pg, psize))
    if not metas:
        return "no valid meta page" if size else None
    _, last_pg, psize = max(metas)
    need = (last_pg + 1) * psize
    return f"{size} bytes, its meta page names {need}" if size < need else None


class _Handles(NamedTuple):
    env: lmdb.Environment
    chunks: Any
    packs: Any
    stat: Any
    commits: Any


@dataclass(frozen=True, slots=True)
class Location:
    """Where a chunk's frame lives: pack id, byte offset and stored length, and the chunk's decoded length."""

    pack: bytes
    offset: int
    length: int
    raw_length: int


# LMDB forbids opening one environment twice in a process: Repo objects on the same path share one, ref-counted.
_SHARED: dict[tuple[int, str], list] = {}  # (pid, real path) -> [environment, users]
_SHARED_LOCK = threading.Lock()
_REBUILD_LOCK = threading.RLock()  # re-entrant: re-indexing after a rebuild writes through the guarded methods
_RETIRED: list = []  # environments set aside while other threads may still use them


class ChunkIndex:
    """The LMDB cache of chunk locations, indexed packs, stat-cache entries and verified commit encodings."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.on_rebuild: Callable[[], None] | None = None  # set by the store: re-index the packs after a rebuild
        self.generation = 0  # how many times this cache was rebuilt in this process
        self._open()

    def _open(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        key = (os.getpid(), os.path.realpath(self.path))
        with _SHARED_LOCK:
            shared = _SHARED.get(key)
            if shared is None:
                shared = _SHARED[key] = [self._open_or_rebuild(), 0]
            shared[1] += 1
        self.key, self.env = key, shared[0]
        self._bind(self.env)

    def _open_or_rebuild(self) -> lmdb.Environment:
        why = truncated(self.path / "data.mdb")
        if why is None:
            try:
                return self._open_env()
            except lmdb.Error as exc:
                why = f"{type(exc).__name__}: {exc}"
        self._set_aside(why)
        return self._open_env()

    def _set_aside(self, why: str | None) -> None:
        # A damaged cache is only a cache: move it out of the way (never map it again) and start an empty one.
        if why is not None:
            warnings.warn(CacheRebuilt(f"the LMDB cache {self.path} was damaged ({why}); rebuilt from the packs"),
                          stacklevel=3)
        aside = self.path.with_name(f"{self.path.name}.damaged-{os.getpid()}")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(self.path, aside)
        shutil.rmtree(aside, ignore_errors=True)
        self.path.mkdir(parents=True)

    def _guarded(self, op: Callable[[], Any]) -> Any:
        """Run a read or write of the environment; LMDB errors (a zeroed or garbled page) and values of the wrong
        shape make the cache be set aside, rebuilt, re-indexed and the operation tried once more."""
        for attempt in range(3):
            generation = self.generation
            try:
                return op()
            except (lmdb.Error, struct.error) as exc:
                code = _os_errno(exc)
                if code is not None:  # a full disk or a failing device: the cache is sound, the disk is not
                    raise OSError(code, f"{os.strerror(code)} (the LMDB cache {self.path})") from None
                if attempt == 2:
                    raise RepositoryError(f"the LMDB cache {self.path} keeps failing after rebuilds: {exc}",
                                          hint=f"remove {self.path} (it is only a cache) and retry") from None
                self.rebuild(f"{type(exc).__name__}: {exc}", generation)

    def rebuild(self, why: str | None, generation: int | None = None) -> None:
        """Set the environment aside, open an empty one and let the store re-index its packs (`why`: the damage, for
        the warning; None for a rebuild asked for). With `generation`, only if no other thread has rebuilt it since
        that generation was read (one rebuild per damage). The old environment is never written to again: LMDB
        may abort the process on writes into damaged pages, where it only returns errors on reads."""
        with _REBUILD_LOCK:
            if generation is not None and generation != self.generation:
                return
            with _SHARED_LOCK:
                shared = _SHARED.get(self.key)
                # The old environment is not closed: other threads may be inside a transaction of it. They fail or
                # read stale entries, and their own checks send them here, where the new generation is found.
                _RETIRED.append(self.env)
                self._set_aside(why)
                env = self._open_env()
                if shared is not None:
                    shared[0] = env
                self.env = env
                self._bind(env)
                self.generation += 1
            if self.on_rebuild is not None:
                self.on_rebuild()

    def _open_env(self) -> lmdb.Environment:
        # Default durability: never writemap or nosync (a crash must not corrupt the index).
        env = lmdb.open(str(self.path), map_size=MAP_SIZE, max_dbs=5, readahead=False)
        for name in (b"chunks", b"packs", b"stat", b"commits"):
            env.open_db(name)
        return env

    def _bind(self, env: lmdb.Environment) -> None:
        # One tuple, swapped whole: a thread never pairs a new environment with an old one's table handles.
        self.h = _Handles(env, env.open_db(b"chunks"), env.open_db(b"packs"), env.open_db(b"stat"),
                          env.open_db(b"commits"))
        self.pid = os.getpid()

    def _handles(self) -> _Handles:
        # An LMDB environment must not be used across fork: reopen in the child.
        if os.getpid() != self.pid:
            self._open()
        return self.h

    def close(self) -> None:
        """Release this user's share of the LMDB environment; the last user closes it."""
        with _SHARED_LOCK:
            shared = _SHARED.get(self.key)
            if shared is None or shared[0] is not self.env:
                return
            shared[1] -= 1
            if shared[1] == 0:
                del _SHARED[self.key]
                self.env.close()

    def get(self, chunk: bytes) -> Location | None:
        """The location of a chunk, or None when no indexed pack holds it."""
        def op() -> Location | None:
            h = self._handles()
            with h.env.begin(db=h.chunks, buffers=False) as txn:
                value = txn.get(chunk)
            return Location(*LOCATION.unpack(value)) if value else None
        return self._guarded(op)

    def get_many(self, chunks: list[bytes]) -> dict[bytes, Location]:
        """The locations of those of `chunks` that are indexed (missing ones are left out), in one read transaction."""
        def op() -> dict[bytes, Location]:
            h = self._handles()
            out = {}
            with h.env.begin(db=h.chunks) as txn:
                for c in chunks:
                    value = txn.get(c)
                    if value:
                        out[c] = Location(*LOCATION.unpack(value))
            return out
        return self._guarded(op)

    def known_packs(self) -> set[bytes]:
        """Ids of the packs the index has recorded."""
        def op() -> set[bytes]:
            h = self._handles()
            with h.env.begin(db=h.packs) as txn:
                return {bytes(k) for k in txn.cursor().iternext(keys=True, values=False)}
        return self._guarded(op)

    def add_packs(self, packs: list[tuple[bytes, list[Entry]]]) -> None:
        """Record sealed packs and their chunks in one write transaction."""
        if not packs:
            return
        io_step()

        def op() -> None:

            h = self._handles()
            with h.env.begin(write=True) as txn:
                for pack_id, entries in packs:
                    for e in entries:
                        txn.put(e.chunk, LOCATION.pack(pack_id, e.offset, e.length, e.raw_length), db=h.chunks)
                    txn.put(pack_id, struct.pack("<I", len(entries)), db=h.packs)
        self._guarded(op)

    def drop_packs(self, pack_ids: set[bytes]) -> None:
        """Forget packs (and their chunks) that are no longer on disk."""
        if not pack_ids:
            return

        def op() -> None:

            h = self._handles()
            with h.env.begin(write=True) as txn:
                cur = txn.cursor(db=h.chunks)
                for key, value in list(cur.iternext()):
                    if len(value) != LOCATION.size or LOCATION.unpack(value)[0] in pack_ids:
                        txn.delete(key, db=h.chunks)
                for p in pack_ids:
                    txn.delete(p, db=h.packs)
        self._guarded(op)

    def pack_locations(self, pack_id: bytes) -> dict[bytes, Location]:
        """Every chunk the index places in pack `pack_id` (fsck compares them with the pack's .idx)."""
        def op() -> dict[bytes, Location]:
            h = self._handles()
            out = {}
            with h.env.begin(db=h.chunks) as txn:
                for key, value in txn.cursor().iternext():
                    loc = Location(*LOCATION.unpack(value)) if len(value) == LOCATION.size else None
                    if loc is not None and loc.pack == pack_id:
                        out[bytes(key)] = loc
            return out
        return self._guarded(op)

    def get_stat(self, key: bytes) -> bytes | None:
        """The raw stat-cache entry stored under `key`, or None."""
        def op() -> bytes | None:
            h = self._handles()
            with h.env.begin(db=h.stat) as txn:
                return txn.get(key)
        return self._guarded(op)

    def put_stats(self, items: list[tuple[bytes, bytes]]) -> None:
        """Store stat-cache entries (key, value) in one write transaction; nothing happens for an empty list."""
        if items:
            def op() -> None:
                h = self._handles()
                with h.env.begin(write=True, db=h.stat) as txn:
                    for key, value in items:
                        txn.put(key, value)
            self._guarded(op)

    def get_commit(self, oid: bytes) -> bytes | None:
        """The cached encoding of commit `oid`, or None (callers check that it hashes to the id)."""
        def op() -> bytes | None:
            h = self._handles()
            with h.env.begin(db=h.commits) as txn:
                return txn.get(oid)
        return self._guarded(op)

    def put_commits(self, items: list[tuple[bytes, bytes]]) -> None:
        """Cache commit encodings (id, encoded) in one write transaction."""
        def op() -> None:
            h = self._handles()
            with h.env.begin(write=True, db=h.commits) as txn:
                for oid, encoded in items:
                    txn.put(oid, encoded)
        self._guarded(op)

    def items(self, table: str) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of one table ("chunks", "stat" or "commits"), for fsck's cache checks."""
        def op() -> list[tuple[bytes, bytes]]:
            h = self._handles()
            with h.env.begin(db=getattr(h, table)) as txn:
                return [(bytes(k), bytes(v)) for k, v in txn.cursor().iternext()]
        return self._guarded(op)

    def delete(self, table: str, keys: list[bytes]) -> None:
        """Remove entries of one table (a cache entry found wrong is dropped, to be rebuilt on demand)."""
        def op() -> None:
            h = self._handles()
            with h.env.begin(write=True, db=getattr(h, table)) as txn:
                for k in keys:
                    txn.delete(k)
        if keys:
            self._guarded(op)

    def count(self) -> int:
        """How many chunks are indexed."""
        def op() -> int:
            h = self._handles()
            with h.env.begin(db=h.chunks) as txn:
                return txn.stat(h.chunks)["entries"]
        return self._guarded(op)


_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS}


def _os_errno(exc: Exception) -> int | None:
    """The errno of an LMDB error that reports the disk, not the file (ENOSPC, EDQUOT, EIO, EROFS), else None."""
    code = getattr(exc, "errno", None) if isinstance(exc, lmdb.Error) else None
    if code in _DISK_ERRORS:
        return code
    text = str(exc)
    return next((c for c in _DISK_ERRORS if os.strerror(c) in text), None)
