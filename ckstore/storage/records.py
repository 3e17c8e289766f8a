"""Records of commits dropped by retention: `dropped/<commit id>`, one small JSON file each.

A retention policy rewrites no kept commit, so a kept commit may name a parent that is gone. Its record keeps the
dropped commit's own parent ids, so history walks go on through it to the kept commits behind it ("parent dropped
by retention") after gc has deleted the commit object. One file per commit: records from two clones merge by union,
and a sync copies the files it lacks, like any other immutable file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..fs.fileio import write_atomic
from ..model.objects import is_hex

MAGIC = "ckstore-dropped"


@dataclass(frozen=True, slots=True)
class Dropped:
    """One dropped commit: its parents (so walks continue past it), when it was dropped and by which policy."""

    oid: bytes
    parents: tuple[bytes, ...]
    time: float
    policy: str

    def encode(self) -> bytes:
        """The record file's bytes."""
        return (json.dumps({"format": MAGIC, "parents": [p.hex() for p in self.parents], "time": self.time,
                            "policy": self.policy}, sort_keys=True) + "\n").encode()


def parse_dropped(oid: bytes, data: bytes) -> Dropped | None:
    """A record from its file's bytes; None for anything that is not a well-formed record (a damaged record is
    ignored: the commit then counts as kept, the safe side)."""
    try:
        raw = json.loads(data.decode("utf-8"))
        parents = tuple(bytes.fromhex(p) for p in raw["parents"] if isinstance(p, str) and len(p) == 64)
        if raw.get("format") != MAGIC or len(parents) != len(raw["parents"]):
            return None
        when, policy = float(raw["time"]), str(raw.get("policy", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return Dropped(oid, parents, when, policy)


class DroppedSet:
    """The `dropped/` directory of a repository, read once per process (a walk asks about every commit)."""

    def __init__(self, root: Path) -> None:
        self.dir, self.tmp = root / "dropped", root / "tmp"
        self._records: dict[bytes, Dropped] | None = None

    def records(self) -> dict[bytes, Dropped]:
        """Every well-formed record, by commit id."""
        if self._records is None:
            out: dict[bytes, Dropped] = {}
            try:
                names = os.listdir(self.dir)
            except (FileNotFoundError, NotADirectoryError):
                names = []
            for name in names:
                if len(name) == 64 and is_hex(name):
                    oid = bytes.fromhex(name)
                    try:
                        rec = parse_dropped(oid, (self.dir / name).read_bytes())
                    except OSError:
                        rec = None
                    if rec is not None:
                        out[oid] = rec
            self._records = out
        return self._records

    def __contains__(self, oid: bytes) -> bool:
        return oid in self.records()

    def get(self, oid: bytes) -> Dropped | None:
        """The record of `oid`, or None when it was not dropped."""
        return self.records().get(oid)

    def add(self, records: list[Dropped]) -> None:
        """Write records (each atomically; an existing record is kept)."""
        for rec in records:
            write_atomic(self.dir / rec.oid.hex(), rec.encode(), self.tmp, exclusive=True)
            if self._records is not None:
                self._records[rec.oid] = rec

    def remove(self, oids: list[bytes]) -> None:
        """Forget that these commits were dropped (a ref names one again)."""
        for oid in oids:
            try:
                (self.dir / oid.hex()).unlink()
            except FileNotFoundError:
                pass
            if self._records is not None:
                self._records.pop(oid, None)

    def reload(self) -> None:
        """Read the directory again on next use (another process may have added records)."""
        self._records = None
