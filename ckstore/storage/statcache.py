"""The stat cache: (absolute path, chunk size) -> the file's stat stamp (device, inode, size, mtime, ctime), its
recipe and tensors, so unchanged files are not re-read. Lives in the LMDB cache; a hit is used only while the
stamp matches, the entry hashes to the BLAKE3 stored before it, and every chunk it names is still in the store.
In an encrypted repository the key is the path's keyed id and the value is sealed: the cache names no path and
holds no recipe in the clear."""

from __future__ import annotations

import os
import time

from ..model.crypto import PLAIN, Scheme
from ..model.objects import ChunkRun, FileRecipe, TensorEntry, hash_bytes, pack_canonical, unpack_limited
from .index import ChunkIndex

RACY_SECONDS = 1.0  # a file modified this recently may change again within the same mtime tick: never cache it


def _key(path: str, chunk_size: int) -> bytes:
    return os.fsencode(os.path.abspath(path)) + b"\0" + str(chunk_size).encode()


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, st.st_dev]


class StatCache:
    """Stat-cache lookups and stores over the LMDB index, keyed by absolute path and chunk size."""

    def __init__(self, index: ChunkIndex, scheme: Scheme = PLAIN) -> None:
        self.index, self.scheme = index, scheme

    def _key(self, path: str, chunk_size: int) -> bytes:
        key = _key(path, chunk_size)
        return self.scheme.object_id(b"stat\0" + key) if self.scheme.encrypted else key

    def get(self, path: str, rel: str, st: os.stat_result, chunk_size: int) -> tuple[FileRecipe, tuple] | None:
        """A file's cached (recipe, tensors) if its stat is unchanged and every chunk is still indexed; else None."""
        key = self._key(path, chunk_size)
        raw = self.index.get_stat(key)
        if raw is None:
            return None
        raw = self.scheme.open_cache(key, raw)
        if raw is None or len(raw) < 32 or hash_bytes(raw[32:]) != raw[:32]:
            self.index.delete("stat", [key])  # damaged: a miss, and gone
            return None
        try:
            stamp, recipe, tensors = unpack_limited(raw[32:])
            if stamp != _stamp(st):
                return None
            recipe = FileRecipe.from_dict({**recipe, "path": rel}, len(tensors))
            entries = tuple(TensorEntry.from_dict({**t, "file": rel}) for t in tensors)
        except (ValueError, TypeError, KeyError):
            return None  # a damaged cache entry is a miss, never an error
        needed = {c for t in entries for c in t.chunks}
        needed.update(c for s in recipe.segments if isinstance(s, ChunkRun) for c in s.chunks)
        if len(self.index.get_many(list(needed))) != len(needed):
            return None
        return recipe, entries

    def put(self, items: list[tuple[str, os.stat_result, int, FileRecipe, tuple[TensorEntry, ...]]]) -> None:
        """Cache recipes of scanned files, skipping any modified less than RACY_SECONDS ago."""
        now = time.time()
        rows = []
        for path, st, chunk_size, recipe, tensors in items:
            if now - st.st_mtime < RACY_SECONDS:
                continue
            value = pack_canonical([_stamp(st), recipe.to_dict(), [t.to_dict() for t in tensors]])
            key = self._key(path, chunk_size)
            rows.append((key, self.scheme.seal_cache(key, hash_bytes(value) + value)))  # hash checked on read
        self.index.put_stats(rows)
