"""gc's first phase: unreferenced packs and objects moved to `tombstones/<set>/` instead of deleted.

Each of the two renames is made durable (both directories fsynced) before the next, so a power loss cannot keep
the second without the first. A set is named `<unix time>-<random>`; gc deletes a set only after its grace period and only if nothing in it is
referenced again. A commit that dedups against a chunk in a tombstoned pack revives the pack (renames it back), so
the commit costs no new bytes and the chunk cannot be deleted under it. A pack moves `.idx` first, then `.pack`
(a `.pack` left alone in packs/ by a crash is unindexed garbage until the next gc finishes the move); it comes
back `.pack` first, then `.idx`.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

from ..fs.fileio import fsync_dir, io_step
from ..model.objects import is_hex
from .packs import Entry, PackFormatError, pack_path, parse_idx


class Tombstones:
    """The `tombstones/` directory of a repository."""

    def __init__(self, root: Path, packs_dir: Path, objects_dir: Path) -> None:
        self.dir, self.packs_dir, self.objects_dir = root / "tombstones", packs_dir, objects_dir
        self._map: dict[bytes, tuple[str, bytes]] | None = None
        self._stamp: int | None = None

    def sets(self) -> list[tuple[str, float]]:
        """(set name, when it was made) for every set, oldest first."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            head = name.split("-", 1)[0]
            if head.isdigit() and (self.dir / name).is_dir():
                out.append((name, float(head)))
        return sorted(out, key=lambda s: s[1])

    def new_set(self, now: float | None = None) -> str:
        """A fresh, empty set's name (made on disk)."""
        name = f"{int(now if now is not None else time.time())}-{uuid.uuid4().hex[:8]}"
        (self.dir / name / "packs").mkdir(parents=True)
        (self.dir / name / "objects").mkdir()
        return name

    def move_pack(self, pack_id: bytes, set_name: str) -> int:
        """Move a pack (.idx, then .pack) into a set; returns the bytes moved."""
        moved = 0
        dest = self.dir / set_name / "packs"
        for suffix in (".idx", ".pack"):
            src = pack_path(self.packs_dir, pack_id, suffix)
            try:
                moved += src.stat().st_size
                io_step()
                os.rename(src, dest / f"{pack_id.hex()}{suffix}")
            except FileNotFoundError:
                continue
            if suffix == ".idx":  # durable before the .pack moves: a power loss must never keep the second alone
                fsync_dir(src.parent)
                fsync_dir(dest)
        return moved

    def move_object(self, oid: bytes, src: Path, set_name: str) -> int:
        """Move a loose object file into a set; returns its size (0 if it was gone)."""
        try:
            size = src.stat().st_size
            io_step()
            os.rename(src, self.dir / set_name / "objects" / oid.hex())
        except FileNotFoundError:
            return 0
        return size

    def sync(self, set_name: str) -> None:
        """Make a set's moves durable (the set, and every packs/ and objects/ directory, fsynced)."""
        for sub in ("packs", "objects"):
            fsync_dir(self.dir / set_name / sub)
        for top in (self.packs_dir, self.objects_dir):
            if top.is_dir():
                for d in top.iterdir():
                    if d.is_dir():
                        fsync_dir(d)

    def contents(self, set_name: str) -> tuple[dict[bytes, list[Entry]], dict[bytes, int]]:
        """({pack id: its .idx entries}, {object id: file size}) of a set; a pack whose .idx is unreadable is
        listed with no entries."""
        packs: dict[bytes, list[Entry]] = {}
        pdir = self.dir / set_name / "packs"
        for p in sorted(pdir.glob("*.pack")) if pdir.is_dir() else []:
            if len(p.stem) == 64 and is_hex(p.stem):
                packs[bytes.fromhex(p.stem)] = _entries(p.with_suffix(".idx"))
        objects: dict[bytes, int] = {}
        odir = self.dir / set_name / "objects"
        for p in sorted(odir.iterdir()) if odir.is_dir() else []:
            if len(p.name) == 64 and is_hex(p.name):
                objects[bytes.fromhex(p.name)] = p.stat().st_size
        return packs, objects

    def size(self, set_name: str) -> int:
        """Bytes a set holds."""
        return sum(p.stat().st_size for p in (self.dir / set_name).rglob("*") if p.is_file())

    def delete(self, set_name: str) -> None:
        """Delete a whole set (the second phase: the bytes are freed)."""
        io_step()
        shutil.rmtree(self.dir / set_name, ignore_errors=True)
        fsync_dir(self.dir)
        self._map = None

    # -- revival ------------------------------------------------------------------------------------------------

    def locate(self, chunk: bytes) -> tuple[str, bytes] | None:
        """(set, pack id) of a tombstoned pack holding `chunk`, or None (one stat when there are no tombstones)."""
        try:
            stamp = os.stat(self.dir).st_mtime_ns
        except FileNotFoundError:
            return None
        if self._map is None or stamp != self._stamp:
            self._map, self._stamp = {}, stamp
            for name, _ in self.sets():
                for pack_id, entries in self.contents(name)[0].items():
                    for e in entries:
                        self._map[e.chunk] = (name, pack_id)
        return self._map.get(chunk)

    def revive_pack(self, set_name: str, pack_id: bytes) -> list[Entry] | None:
        """Move a tombstoned pack back into packs/ (.pack, then .idx); its entries, or None if it is gone."""
        src = self.dir / set_name / "packs"
        entries = _entries(src / f"{pack_id.hex()}.idx")
        if not entries:
            return None
        for suffix in (".pack", ".idx"):
            dest = pack_path(self.packs_dir, pack_id, suffix)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                io_step()
                os.rename(src / f"{pack_id.hex()}{suffix}", dest)
            except FileNotFoundError:
                if not dest.exists():
                    return None
            if suffix == ".pack":  # the pack is back for good before its .idx makes it indexed
                fsync_dir(dest.parent)
                fsync_dir(src)
        fsync_dir(pack_path(self.packs_dir, pack_id).parent)
        self._map = None
        return entries

    def revive_object(self, oid: bytes, dest: Path) -> bool:
        """Move a tombstoned object back to `dest` (its place in objects/); False if no set holds it."""
        for name, _ in self.sets():
            src = self.dir / name / "objects" / oid.hex()
            if src.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.rename(src, dest)
                fsync_dir(dest.parent)
                return True
        return False

    def finish_interrupted(self) -> int:
        """Complete pack moves a crash cut in half (a `.pack` in packs/ whose `.idx` is in a set); returns how many."""
        done = 0
        for name, _ in self.sets():
            for idx in (self.dir / name / "packs").glob("*.idx"):
                stray = pack_path(self.packs_dir, bytes.fromhex(idx.stem)) if is_hex(idx.stem) else None
                if stray is not None and stray.exists() and not (idx.with_suffix(".pack")).exists():
                    os.rename(stray, idx.with_suffix(".pack"))
                    done += 1
        return done


def _entries(idx: Path) -> list[Entry]:
    try:
        _, entries = parse_idx(idx.read_bytes())
    except (OSError, PackFormatError):
        return []
    return entries
