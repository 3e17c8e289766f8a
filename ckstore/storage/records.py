"""Records about commits, one small JSON file per commit id: `dropped/` (retention) and `archived/` (cold tier).

A retention policy rewrites no kept commit, so a kept commit may name a parent that is gone. Its record keeps the
dropped commit's own parent ids, so history walks go on through it to the kept commits behind it ("parent dropped
by retention") after gc has deleted the commit object. One file per commit: records from two clones merge by union,
and a sync copies the files it lacks, like any other immutable file.

An archived commit keeps its commit and manifest objects here, but its chunks live on a cold remote: its record
names the remote, so checkout fetches them on demand and gc does not count them as needed locally.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..fs.fileio import write_atomic
from ..model.objects import is_hex

from typing import Callable, Generic, TypeVar

MAGIC = "ckstore-dropped"
ARCHIVED = "ckstore-archived"


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


@dataclass(frozen=True, slots=True)
class Archived:
    """One archived commit: the remote its chunks were moved to, and when."""

    oid: bytes
    remote: str
    time: float

    def encode(self) -> bytes:
        """The record file's bytes."""
        return (json.dumps({"format": ARCHIVED, "remote": self.remote, "time": self.time}, sort_keys=True)
                + "\n").encode()


def parse_archived(oid: bytes, data: bytes) -> Archived | None:
    """An archive record from its file's bytes; None for anything else."""
    try:
        raw = json.loads(data.decode("utf-8"))
        if raw.get("format") != ARCHIVED or not isinstance(raw.get("remote"), str):
            return None
        return Archived(oid, raw["remote"], float(raw["time"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


R = TypeVar("R", Dropped, Archived)


class RecordDir(Generic[R]):
    """A directory of per-commit records, read once per process (a walk asks about every commit)."""

    def __init__(self, root: Path, name: str, parse: Callable[[bytes, bytes], R | None]) -> None:
        self.dir, self.tmp, self.parse = root / name, root / "tmp", parse
        self._records: dict[bytes, R] | None = None

    def records(self) -> dict[bytes, R]:
        """Every well-formed record, by commit id."""
        if self._records is None:
            out: dict[bytes, R] = {}
            try:
                names = os.listdir(self.dir)
            except (FileNotFoundError, NotADirectoryError):
                names = []
            for name in names:
                if len(name) == 64 and is_hex(name):
                    oid = bytes.fromhex(name)
                    try:
                        rec = self.parse(oid, (self.dir / name).read_bytes())
                    except OSError:
                        rec = None
                    if rec is not None:
                        out[oid] = rec
            self._records = out
        return self._records

    def damaged(self) -> list[str]:
        """Names in the directory that are not well-formed records (fsck reports them; readers ignore them)."""
        try:
            names = sorted(os.listdir(self.dir))
        except (FileNotFoundError, NotADirectoryError):
            return []
        good = {oid.hex() for oid in self.records()}
        return [n for n in names if n not in good]

    def __contains__(self, oid: bytes) -> bool:
        return oid in self.records()

    def get(self, oid: bytes) -> R | None:
        """The record of `oid`, or None when there is none."""
        return self.records().get(oid)

    def add(self, records: list[R]) -> None:
        """Write records (each atomically; an existing record is kept)."""
        for rec in records:
            write_atomic(self.dir / rec.oid.hex(), rec.encode(), self.tmp, exclusive=True)
            if self._records is not None:
                self._records[rec.oid] = rec

    def remove(self, oids: list[bytes]) -> None:
        """Remove the records of these commits."""
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


def dropped_set(root: Path) -> RecordDir[Dropped]:
    """The `dropped/` records of the repository directory `root`."""
    return RecordDir(root, "dropped", parse_dropped)


def archived_set(root: Path) -> RecordDir[Archived]:
    """The `archived/` records of the repository directory `root`."""
    return RecordDir(root, "archived", parse_archived)
