"""Repack: rewrite packs that are partly garbage, so the bytes of dropped chunks really come back.

Runs inside gc's sweep (no writer runs meanwhile): the live frames of each chosen pack are read, verified against
their ids (a frame is copied only once its chunk decodes to its id), and written into new packs; gc's sweep then
moves the old packs to tombstones like any other garbage.
"""

from __future__ import annotations

from ..errors import CkstoreError, CorruptObject
from ..model import codec
from ..model.objects import hash_bytes
from ..results import GcResult
from ..storage.packs import pack_path
from .gc import Repacker, pack_entries
from .reach import Reach
from .repository import Repository


def repacker_for(max_unused: float) -> Repacker:
    """A repack step for gc that rewrites packs whose garbage exceeds `max_unused` (a fraction of the pack)."""
    if not 0 <= max_unused <= 1:
        raise CkstoreError(f"--max-unused is a fraction from 0 to 1, not {max_unused}")

    def run(repo: Repository, reach: Reach, candidates: list[dict], result: GcResult) -> list[bytes]:
        chosen = [bytes.fromhex(c["pack"]) for c in candidates if c["unused"] > max_unused * c["size"]]
        return repack(repo, reach, chosen, result)
    return run


def repack(repo: Repository, reach: Reach, packs: list[bytes], result: GcResult) -> list[bytes]:
    """Copy the live frames of `packs` into new packs; returns the packs now fully garbage. A pack with a frame
    that fails its check is left as it is (fsck's to report; nothing is copied from it)."""
    if not packs:
        return []
    entries = pack_entries(repo)
    live = reach.live_chunks
    sink = repo.store.sink(repo.config.pack_size)
    done: list[bytes] = []
    try:
        for pack_id in packs:
            frames = []
            try:
                for e in entries.get(pack_id, []):
                    if e.chunk not in live:
                        continue
                    frame = _frame(repo, pack_id, e)  # this very frame is checked, not another copy
                    raw = codec.decode(frame, e.raw_length, lambda b: repo.store.get_chunk(b, keep=False))
                    if hash_bytes(raw) != e.chunk:
                        raise CorruptObject("chunk", e.chunk.hex(), "?")
                    frames.append((e.chunk, frame, e.raw_length))
            except (CkstoreError, codec.FrameError, OSError):
                continue
            for chunk, frame, raw_length in frames:
                sink.add(chunk, frame, raw_length, again=True)
            done.append(pack_id)
            result.repack_freed += sum(e.length for e in entries.get(pack_id, []) if e.chunk not in live)
        sink.finish()
    except BaseException:
        sink.abort()
        raise
    return done


def _frame(repo: Repository, pack_id: bytes, e) -> bytes:
    with open(pack_path(repo.store.packs_dir, pack_id), "rb") as f:
        f.seek(e.offset)
        return f.read(e.length)
