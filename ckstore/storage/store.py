"""The object store: loose objects, packs of chunk frames, and the LMDB index over them; every read verified."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterator

import lmdb
import zstandard

from ..errors import CkstoreError, CorruptObject, MissingObject
from ..fs.fileio import write_atomic
from ..model import codec
from ..model.crypto import PLAIN, Scheme
from ..model.objects import (
    Commit,
    Object,
    decode_object,
    decode_trusted_commit,
    encode_object,
    is_hex,
)
from .config import MAX_DELTA_DEPTH
from .index import ChunkIndex, Location
from .packs import Entry, PackFormatError, PackWriter, pack_path, parse_idx
from .recent import RecentChunks
from .tombstones import Tombstones

MAX_OBJECT = 256 * 1024 * 1024  # decompressed size cap for one object


def decompress_object(oid: bytes, data: bytes) -> bytes:
    """The encoded object from its zstd bytes (at most MAX_OBJECT); CorruptObject if undecodable."""
    try:
        size = zstandard.frame_content_size(data)
        if not 0 <= size <= MAX_OBJECT:
            raise zstandard.ZstdError(f"declared size {size} out of bounds")
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise CorruptObject("object", oid.hex(), "?", detail=f"undecodable: {exc}") from None


class Store:
    """A repository's objects (zstd loose files), chunk packs and their LMDB index; reads are verified."""

    def __init__(self, root: Path, index_path: Path | None = None, scheme: Scheme = PLAIN) -> None:
        self.root = root
        #: how ids are computed and frames and objects stored: plain, or keyed and sealed (an encrypted repository)
        self.scheme = scheme
        self.objects_dir, self.packs_dir, self.tmp_dir = root / "objects", root / "packs", root / "tmp"
        self.index = ChunkIndex(index_path or root / "cache" / "index.lmdb")
        self.index.on_rebuild = self.sync_index
        self._fds: dict[bytes, int] = {}
        self._commit_cache: dict[bytes, bytes] = {}  # verified commits waiting to go into the LMDB cache
        self._recent = RecentChunks()
        self._lock = threading.Lock()
        self.tombstones = Tombstones(root, self.packs_dir, self.objects_dir)
        self.sync_index()

    def close(self) -> None:
        """Flush the commit cache, close open pack files and release the index."""
        self.flush_commit_cache()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self.index.close()

    # -- objects ------------------------------------------------------------------------------------------------

    def object_path(self, oid: bytes) -> Path:
        """The file of a loose object: objects/ab/cdef... by hex id."""
        h = oid.hex()
        return self.objects_dir / h[:2] / h[2:]

    def put_object(self, obj: Object) -> bytes:
        """Encode, compress and write an object (an existing file for its id is kept); returns its id."""
        encoded = encode_object(obj)
        oid = self.scheme.object_id(encoded)
        data = self.scheme.seal_object(oid, zstandard.ZstdCompressor(level=3).compress(encoded))
        write_atomic(self.object_path(oid), data, self.tmp_dir, exclusive=True)
        return oid

    def get_commit_or_object(self, oid: bytes) -> Object:
        """Like get_object, but commits come from the LMDB cache when they can (history walks touch thousands)."""
        raw = self.index.get_commit(oid)
        if raw is not None:
            raw = self.scheme.open_cache(oid, raw)
        if raw is not None and self.scheme.object_id(raw) == oid:  # believed only once it hashes to its id
            try:
                return decode_trusted_commit(raw)  # the bytes are the object's own: schema-checked when cached
            except (ValueError, TypeError, KeyError, IndexError):
                pass  # cannot happen for bytes that hash to a commit's id; read the object itself
        obj = self.get_object(oid)
        if isinstance(obj, Commit):
            self._commit_cache[oid] = self.scheme.seal_cache(oid, encode_object(obj))
            if len(self._commit_cache) >= 1024:
                self.flush_commit_cache()
        return obj

    def flush_commit_cache(self) -> None:
        """Write the commits verified since the last flush into the LMDB commit cache."""
        if self._commit_cache:
            try:
                self.index.put_commits(list(self._commit_cache.items()))
            except (OSError, CkstoreError, lmdb.Error):
                pass  # only a cache: a write it cannot make (a full disk) must not fail a command that has landed
            self._commit_cache.clear()

    def get_object(self, oid: bytes) -> Object:
        """The object with id `oid`, verified and decoded; MissingObject if absent, CorruptObject if damaged."""
        try:
            data = self.object_path(oid).read_bytes()
        except FileNotFoundError:
            raise MissingObject("object", oid.hex()) from None
        return decode_object(self.decompress_object(oid, data), oid, self.scheme)

    def decompress_object(self, oid: bytes, data: bytes) -> bytes:
        """The encoded object from a loose file's bytes (opened, then zstd, at most MAX_OBJECT); CorruptObject if
        it does not open or decode."""
        return decompress_object(oid, self.scheme.open_object(oid, data))

    def has_object(self, oid: bytes) -> bool:
        """True when the loose object file exists (its content is not checked)."""
        return self.object_path(oid).is_file()

    def ids_with_prefix(self, prefix: str) -> list[bytes]:
        """Ids of the objects whose hex id starts with `prefix` (at least 2 lower-case hex digits)."""
        sub = self.objects_dir / prefix[:2]
        try:
            names = os.listdir(sub)
        except (FileNotFoundError, NotADirectoryError):
            return []
        full = (prefix[:2] + n for n in names)
        return [bytes.fromhex(h) for h in full if len(h) == 64 and h.startswith(prefix) and is_hex(h)]

    def object_ids(self) -> Iterator[bytes]:
        """Ids of every loose object, in hex order (stray files and directories that name no object are passed
        over: fsck reports objects, not litter)."""
        if not self.objects_dir.is_dir():
            return
        for sub in sorted(self.objects_dir.iterdir()):
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for f in sorted(sub.iterdir()):
                name = sub.name + f.name
                if len(name) == 64 and is_hex(name):
                    yield bytes.fromhex(name)

    # -- packs and index ----------------------------------------------------------------------------------------

    def pack_ids(self) -> set[bytes]:
        """Ids of the packs on disk that have an .idx file."""
        out = set()
        if self.packs_dir.is_dir():
            for sub in self.packs_dir.iterdir():
                out.update(bytes.fromhex(p.stem) for p in sub.glob("*.idx") if len(p.stem) == 64)
        return out

    def packs_without_idx(self) -> set[bytes]:
        """Ids of `.pack` files with no `.idx` beside them: a seal in progress, a crash between the two renames,
        or a lost `.idx` (their chunks are not indexed)."""
        out = set()
        if self.packs_dir.is_dir():
            for sub in self.packs_dir.iterdir():
                for p in sub.glob("*.pack"):
                    if len(p.stem) == 64 and is_hex(p.stem) and not p.with_suffix(".idx").exists():
                        out.add(bytes.fromhex(p.stem))
        return out

    def sync_index(self) -> None:
        """Index packs that are on disk but not in the cache (after a crash, a pull, a deleted cache)."""
        known = self.index.known_packs()
        on_disk = self.pack_ids()
        new = []
        # oldest first, so a chunk two packs hold is indexed where the newest put it: a repack cut short leaves old
        # and new copies, and only the new frames are sure to decode together (their bases were rewritten too)
        for pack_id in sorted(on_disk - known, key=self._pack_mtime):
            try:
                pid, entries = parse_idx(pack_path(self.packs_dir, pack_id, ".idx").read_bytes())
            except (OSError, PackFormatError):
                continue  # fsck reports damaged index files; the chunks stay unreachable until then
            if pid == pack_id and pack_path(self.packs_dir, pack_id).is_file():
                new.append((pack_id, entries))
        self.index.add_packs(new)
        self.index.drop_packs(known - on_disk)

    def _pack_mtime(self, pack_id: bytes) -> tuple[int, bytes]:
        try:
            return os.stat(pack_path(self.packs_dir, pack_id)).st_mtime_ns, pack_id
        except OSError:
            return 0, pack_id

    def reindex(self) -> int:
        """Rebuild the index from the packs' .idx files (a fresh environment: the old one may be damaged, and
        LMDB aborts on some writes into damaged pages); returns the number of chunks indexed."""
        self.index.rebuild(None)
        return self.index.count()

    def has_chunk(self, chunk: bytes) -> bool:
        """True when an indexed pack holds the chunk."""
        return self.index.get(chunk) is not None

    def revive(self, chunk: bytes) -> bool:
        """Bring back the tombstoned pack holding `chunk`, if gc's first phase moved one aside; True if it did.
        Only a writer holding a lease may call it (a sweep cannot run meanwhile)."""
        with self._lock:
            if self.index.get(chunk) is not None:
                return True
            hit = self.tombstones.locate(chunk)
            if hit is None:
                return False
            entries = self.tombstones.revive_pack(*hit)
            if entries is None:
                return False
            self.index.add_packs([(hit[1], entries)])
            return any(e.chunk == chunk for e in entries)

    def _fd(self, pack: bytes) -> int:
        with self._lock:
            if pack not in self._fds:
                try:
                    self._fds[pack] = os.open(pack_path(self.packs_dir, pack), os.O_RDONLY)
                except FileNotFoundError:
                    raise MissingObject("pack", pack.hex()) from None
            return self._fds[pack]

    def read_frame(self, loc: Location) -> bytes:
        """The stored frame at `loc`, as bytes (not yet verified: decode and hash it before use). A location past
        the end of its pack (a damaged index entry) is CorruptObject, never a huge read."""
        fd = self._fd(loc.pack)
        if loc.offset + loc.length > os.fstat(fd).st_size or loc.length > MAX_OBJECT:
            raise CorruptObject("chunk location", loc.pack.hex(), "?",
                                detail=f"{loc.length} bytes at {loc.offset} lie outside the pack")
        return os.pread(fd, loc.length, loc.offset)

    def frame_base(self, loc: Location, chunk: bytes) -> bytes | None:
        """The delta base `chunk`'s stored frame names (None for a full frame): read from its header alone, or in
        an encrypted repository from the whole frame opened."""
        if self.scheme.encrypted:
            return codec.frame_base(self.scheme.open_frame(chunk, self.read_frame(loc)))
        return codec.frame_base(os.pread(self._fd(loc.pack), min(loc.length, codec.HEADER.size + 32), loc.offset))

    def open_frame(self, chunk: bytes, stored: bytes | memoryview) -> bytes | memoryview:
        """A stored frame of `chunk` as the codec reads it (opened in an encrypted repository)."""
        return self.scheme.open_frame(chunk, stored)

    def get_chunk(self, chunk: bytes, *, keep: bool = True) -> memoryview:
        """The verified raw bytes of a chunk. `keep=False` for a chunk read once (checkout, a commit's delta
        base): the recent-chunks cache would only hold it, 16 MiB of memory for nothing."""
        cached = self._recent.get(chunk)
        if cached is not None:
            return cached
        generation = self.index.generation
        try:
            raw = self._verified(chunk)
        except (CorruptObject, MissingObject) as exc:
            # The index is a cache: before calling data corrupt, check the locations it gave against the packs'
            # .idx files; if it lied, rebuild it and try once more. If it told the truth, name the damaged frame.
            if self.index.generation == generation and not self._index_was_wrong(chunk, generation):
                raise self._root_cause(chunk, exc) from None
            raw = self._verified(chunk)
        if keep:
            self._recent.put(chunk, raw)
        return raw.toreadonly()

    def read_chunk(self, chunk: bytes) -> memoryview:
        """A chunk's bytes decoded *without* checking them against its id: only for a caller that checks a hash
        covering them before anything uses them, and reads again with `get_chunk` when that check fails
        (checkout: the whole file's BLAKE3 before the file gets its name). A frame that cannot be decoded is
        read through `get_chunk` at once, which names the damage (and rebuilds an index that lied)."""
        cached = self._recent.get(chunk)
        if cached is not None:
            return cached
        try:
            raw, _ = self._decode(chunk)
        except (CorruptObject, MissingObject):
            return self.get_chunk(chunk, keep=False)
        return raw.toreadonly()

    def _verified(self, chunk: bytes) -> memoryview:
        raw, pack = self._decode(chunk)
        got = self.scheme.chunk_id(raw)
        if got != chunk:
            raise CorruptObject("chunk", chunk.hex(), got.hex(), detail=f"in pack {pack.hex()[:12]}")
        return raw

    def _chain(self, chunk: bytes) -> list[tuple[bytes, Location | None]]:
        """(chunk, indexed location) down a delta chain as the index describes it, as far as it can be followed."""
        out: list[tuple[bytes, Location | None]] = []
        cur: bytes | None = chunk
        while cur is not None and len(out) <= MAX_DELTA_DEPTH:
            loc = self.index.get(cur)
            out.append((cur, loc))
            if loc is None:
                break
            try:
                cur = self.frame_base(loc, cur)
            except (codec.FrameError, OSError, CkstoreError):
                break
        return out

    def _index_was_wrong(self, chunk: bytes, generation: int) -> bool:
        """Does the index disagree with the .idx files about `chunk` or its delta bases? If so it is rebuilt."""
        truth: dict[bytes, dict[bytes, Entry]] = {}
        for cid, loc in self._chain(chunk):
            if loc is None:
                wrong = any(cid in entries for entries in self._all_idx().values())
            else:
                if loc.pack not in truth:
                    truth[loc.pack] = self._idx_entries(loc.pack) or {}
                e = truth[loc.pack].get(cid)
                wrong = e is None or (e.offset, e.length, e.raw_length) != (loc.offset, loc.length, loc.raw_length)
            if wrong:
                self.index.rebuild(f"chunk {cid.hex()[:12]} was indexed where its pack does not hold it", generation)
                return True
        return False

    def _idx_entries(self, pack_id: bytes) -> dict[bytes, Entry] | None:
        try:
            pid, entries = parse_idx(pack_path(self.packs_dir, pack_id, ".idx").read_bytes())
        except (OSError, PackFormatError):
            return None
        return {e.chunk: e for e in entries} if pid == pack_id else None

    def _all_idx(self) -> dict[bytes, dict[bytes, Entry]]:
        return {p: self._idx_entries(p) or {} for p in self.pack_ids()}

    def _root_cause(self, chunk: bytes, exc: CkstoreError) -> CkstoreError:
        """The error naming the first damaged frame of `chunk`'s delta chain (a damaged base, not its healthy
        dependant), decoding the chain from its full frame upwards."""
        chain = self._chain(chunk)
        for i in range(len(chain) - 1, -1, -1):
            cid, loc = chain[i]
            if loc is None:
                return MissingObject("chunk", cid.hex()) if cid != chunk else exc
            try:
                frame = self.open_frame(cid, self.read_frame(loc))
                raw = codec.decode(frame, loc.raw_length, (lambda b: self._verified(b)) if i + 1 < len(chain) else None)
                ok = self.scheme.chunk_id(raw) == cid
            except (codec.FrameError, CkstoreError, OSError):
                ok = False
            if not ok:
                if cid == chunk:
                    return exc
                return CorruptObject("chunk", cid.hex(), "?", detail=f"in pack {loc.pack.hex()[:12]}, the delta base "
                                     f"of {chunk.hex()[:12]} (which cannot be read without it)")
        return exc

    def _decode(self, chunk: bytes) -> tuple[memoryview, bytes]:
        """Decode a chunk with its delta chain: frames are gathered down to a full frame, or to a base already in
        the recent cache, and decoded in one pass. Only the chunk asked for is hashed (by the caller): a wrong
        byte anywhere in the chain changes the final bytes, so one check at the end covers the whole chain."""
        cached = self._recent.get(chunk)
        if cached is not None:
            return cached, b""
        frames, first, tail, cur = [], None, None, chunk
        while True:
            loc = self.index.get(cur)
            if loc is None:
                raise MissingObject("chunk", cur.hex())
            if first is None:
                first = loc
            elif loc.raw_length != first.raw_length:
                raise CorruptObject("chunk", chunk.hex(), "?", detail=f"delta base {cur.hex()[:12]} has another length")
            if len(frames) > MAX_DELTA_DEPTH:
                raise CorruptObject("chunk", chunk.hex(), "?", detail="delta chain too deep")
            frames.append(self.open_frame(cur, self.read_frame(loc)))
            try:
                base = codec.frame_base(frames[-1])
            except codec.FrameError as exc:
                raise CorruptObject("chunk", cur.hex(), "?", detail=f"pack {loc.pack.hex()[:12]}: {exc}") from None
            if base is None:
                break
            tail = self._recent.get(base)
            if tail is not None:
                break
            cur = base
        try:
            raw = codec.decode_chain(frames, first.raw_length, tail)
        except codec.FrameError as exc:
            raise CorruptObject("chunk", chunk.hex(), "?", detail=f"pack {first.pack.hex()[:12]}: {exc}") from None
        return raw, first.pack

    def delta_chain(self, chunk: bytes, limit: int) -> tuple[int, int | None]:
        """(how many delta frames must be decoded to read `chunk`, counting up to `limit`; the stored length of
        the full frame the chain starts from, when reached). That length is what a plain frame of a later
        version of the same data is expected to cost."""
        depth = 0
        while depth < limit:
            loc = self.index.get(chunk)
            if loc is None:
                return limit, None  # unknown base: never delta against it
            try:
                base = self.frame_base(loc, chunk)
            except (codec.FrameError, CkstoreError):
                return limit, None
            if base is None:
                return depth, loc.length
            chunk, depth = base, depth + 1
        return depth, None

    def delta_depth(self, chunk: bytes, limit: int) -> int:
        """How many delta frames must be decoded to read `chunk`, counting up to `limit`."""
        return self.delta_chain(chunk, limit)[0]

    def sink(self, pack_size: int, *, index_each_pack: bool = False) -> PackSink:
        """A PackSink writing new frames into this store's packs."""
        return PackSink(self, pack_size, index_each_pack=index_each_pack)


class PackSink:
    """New frames into packs in tmp/, sealed at `pack_size`: the one pack writer of commits and fetches.

    A commit indexes its packs in one transaction at `finish` (no chunk is visible before the manifest that needs
    it can be written); a fetch indexes each pack as it is sealed (`index_each_pack`), so an interrupted fetch
    keeps what it completed. A delta frame naming a chunk of the unsealed pack decodes before it is sealed: `chunk`
    reads that base back from the pack's file (a fetch keeps recent chunks in memory and rarely needs to).
    """

    def __init__(self, store: Store, pack_size: int, *, index_each_pack: bool = False) -> None:
        self.store, self.pack_size = store, pack_size
        self.index_each_pack = index_each_pack
        self.current: PackWriter | None = None
        self.sealed: list[tuple[bytes, list[Entry]]] = []
        self.pending: set[bytes] = set()
        self._reading = threading.Lock()  # `chunk` may be called from several threads while `add` waits
        self.bytes_written = 0  # frame bytes added: what this sink stored anew
        self.packs = 0

    def __contains__(self, chunk: bytes) -> bool:
        return chunk in self.pending

    def has(self, chunk: bytes) -> bool:
        """In this sink or already in the store (reviving a tombstoned pack that holds it)."""
        return chunk in self.pending or self.store.has_chunk(chunk) or self.store.revive(chunk)

    def chunk(self, chunk: bytes) -> memoryview:
        """A verified chunk: decoded from the unsealed pack's file, or read from the store."""
        with self._reading:
            got = self.current.frame(chunk) if self.current is not None else None
        if got is None:
            return self.store.get_chunk(chunk)
        frame, raw_length = got
        try:
            raw = codec.decode(self.store.open_frame(chunk, frame), raw_length, self.chunk)
        except codec.FrameError as exc:
            raise CorruptObject("chunk", chunk.hex(), "?", detail=f"in the pack being written: {exc}") from None
        if (got := self.store.scheme.chunk_id(raw)) != chunk:
            raise CorruptObject("chunk", chunk.hex(), got.hex(), detail="in the pack being written")
        return raw

    def add(self, chunk: bytes, frame: bytes | memoryview, raw_length: int, *, again: bool = False,
            looked_up: bool = False) -> bool:
        """Add a verified chunk's stored frame (sealed already in an encrypted repository: a fetch keeps the
        remote's bytes); False if the sink or the store has it already. `again` writes a chunk the
        store indexes anyway (a repair copying the intact frames out of a damaged pack); `looked_up`: the caller
        has just found the store without it (a snapshot's worker, moments ago), so it is not looked up again — at
        worst a writer racing this one stores the same frame twice, which costs bytes, never correctness."""
        if chunk in self.pending or (not again and not looked_up
                                     and (self.store.has_chunk(chunk) or self.store.revive(chunk))):
            return False
        if self.current is None:
            self.current = PackWriter(self.store.packs_dir, self.store.tmp_dir)
        self.current.add(chunk, frame, raw_length)
        self.pending.add(chunk)
        self.bytes_written += len(frame)
        if self.current.size >= self.pack_size:
            self.seal()
        return True

    def seal(self) -> None:
        """Close the current pack (indexed now with `index_each_pack`, else at finish)."""
        if self.current is None:
            return
        sealed = self.current.seal()
        self.current = None
        self.packs += 1
        if self.index_each_pack:
            self.store.index.add_packs([sealed])
            self.pending.difference_update(e.chunk for e in sealed[1])
        else:
            self.sealed.append(sealed)

    def finish(self) -> list[tuple[bytes, list[Entry]]]:
        """Seal the last pack and index every pack not indexed yet, in one transaction."""
        self.seal()
        self.store.index.add_packs(self.sealed)
        return self.sealed

    def abort(self) -> None:
        """Drop the unsealed pack (sealed packs stay: unindexed ones are garbage, indexed ones are valid)."""
        if self.current is not None:
            self.current.abort()
            self.current = None
