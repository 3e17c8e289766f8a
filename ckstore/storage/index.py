"""The LMDB chunk index: chunk id -> (pack, offset, length, raw length). A cache rebuilt from .idx files."""

from __future__ import annotations

import os
import shutil
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import lmdb

from ..fs.fileio import io_step
from .packs import Entry

LOCATION = struct.Struct("<32sQII")
MAP_SIZE = 1 << 36  # address space only; the file grows as needed


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


class ChunkIndex:
    """The LMDB cache of chunk locations, indexed packs, stat-cache entries and verified commit encodings."""

    def __init__(self, path: Path) -> None:
        self.path = path
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
        try:
            return self._open_env()
        except lmdb.Error:
            # A damaged cache is only a cache: set it aside and rebuild it from the packs' .idx files.
            aside = self.path.with_name(f"{self.path.name}.damaged-{os.getpid()}")
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(self.path, aside)
            shutil.rmtree(aside, ignore_errors=True)
            self.path.mkdir(parents=True)
            return self._open_env()

    def _open_env(self) -> lmdb.Environment:
        # Default durability: never writemap or nosync (a crash must not corrupt the index).
        env = lmdb.open(str(self.path), map_size=MAP_SIZE, max_dbs=5, readahead=False)
        for name in (b"chunks", b"packs", b"stat", b"commits"):
            env.open_db(name)
        return env

    def _bind(self, env: lmdb.Environment) -> None:
        self.chunks = env.open_db(b"chunks")
        self.packs = env.open_db(b"packs")
        self.stat = env.open_db(b"stat")
        self.commits = env.open_db(b"commits")
        self.pid = os.getpid()

    def _env(self) -> lmdb.Environment:
        # An LMDB environment must not be used across fork: reopen in the child.
        if os.getpid() != self.pid:
            self._open()
        return self.env

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
        with self._env().begin(db=self.chunks, buffers=False) as txn:
            value = txn.get(chunk)
        return Location(*LOCATION.unpack(value)) if value else None

    def get_many(self, chunks: list[bytes]) -> dict[bytes, Location]:
        """The locations of those of `chunks` that are indexed (missing ones are left out), in one read transaction."""
        out = {}
        with self._env().begin(db=self.chunks) as txn:
            for c in chunks:
                value = txn.get(c)
                if value:
                    out[c] = Location(*LOCATION.unpack(value))
        return out

    def known_packs(self) -> set[bytes]:
        """Ids of the packs the index has recorded."""
        with self._env().begin(db=self.packs) as txn:
            return {bytes(k) for k in txn.cursor().iternext(keys=True, values=False)}

    def add_packs(self, packs: list[tuple[bytes, list[Entry]]]) -> None:
        """Record sealed packs and their chunks in one write transaction."""
        if not packs:
            return
        io_step()
        with self._env().begin(write=True) as txn:
            for pack_id, entries in packs:
                for e in entries:
                    txn.put(e.chunk, LOCATION.pack(pack_id, e.offset, e.length, e.raw_length), db=self.chunks)
                txn.put(pack_id, struct.pack("<I", len(entries)), db=self.packs)

    def drop_packs(self, pack_ids: set[bytes]) -> None:
        """Forget packs (and their chunks) that are no longer on disk."""
        if not pack_ids:
            return
        with self._env().begin(write=True) as txn:
            cur = txn.cursor(db=self.chunks)
            for key, value in list(cur.iternext()):
                if LOCATION.unpack(value)[0] in pack_ids:
                    txn.delete(key, db=self.chunks)
            for p in pack_ids:
                txn.delete(p, db=self.packs)

    def get_stat(self, key: bytes) -> bytes | None:
        """The raw stat-cache entry stored under `key`, or None."""
        with self._env().begin(db=self.stat) as txn:
            return txn.get(key)

    def put_stats(self, items: list[tuple[bytes, bytes]]) -> None:
        """Store stat-cache entries (key, value) in one write transaction; nothing happens for an empty list."""
        if items:
            with self._env().begin(write=True, db=self.stat) as txn:
                for key, value in items:
                    txn.put(key, value)

    def get_commit(self, oid: bytes) -> bytes | None:
        """The cached encoding of commit `oid`, or None (callers check that it hashes to the id)."""
        with self._env().begin(db=self.commits) as txn:
            return txn.get(oid)

    def put_commits(self, items: list[tuple[bytes, bytes]]) -> None:
        """Cache commit encodings (id, encoded) in one write transaction."""
        with self._env().begin(write=True, db=self.commits) as txn:
            for oid, encoded in items:
                txn.put(oid, encoded)

    def clear(self) -> None:
        """Empty every table (chunks, packs, stat cache, commits), keeping the environment open."""
        with self._env().begin(write=True) as txn:
            txn.drop(self.chunks, delete=False)
            txn.drop(self.packs, delete=False)
            txn.drop(self.stat, delete=False)
            txn.drop(self.commits, delete=False)

    def count(self) -> int:
        """How many chunks are indexed."""
        with self._env().begin(db=self.chunks) as txn:
            return txn.stat(self.chunks)["entries"]
