"""What the verbs return: typed values with hex ids and a `to_dict()` for JSON (pure data: imports only model)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import QuerySyntaxError
from ..model.diff import Diff
from ..model.metadata import META_SECTIONS
from ..model.objects import Commit, Manifest
from ..model.progress import human_bytes
from ..model.query import parse_path
from .governance import (AliasInfo, AliasMoveInfo, CheckResult, MergeResult, NoteInfo, PromotionResult,
                         ProtectionInfo)

__all__ = ["AliasInfo", "AliasMoveInfo", "AuditEntry", "BranchInfo", "CheckResult", "CommitInfo", "CommitResult",
           "Diff", "DuReport", "DuRow", "FileInfo", "MergeResult", "NoteInfo", "PromotionResult", "ProtectionInfo",
           "ForgetResult", "FsckReport", "GcResult", "Kept", "Problem", "RepairResult", "ResetResult", "ShowInfo",
           "SyncResult", "TagInfo", "json_safe", "metric_value"]


@dataclass(frozen=True)
class CommitInfo:
    """A commit as users see it: its hex id, the refs that name it, and its metadata (as attributes)."""

    id: str
    commit: Commit
    refs: tuple[str, ...] = ()
    history: tuple[bytes, ...] | None = None  # parents as history walks see them, past commits retention dropped
    notes: dict = field(default_factory=dict)  # {namespace: data} added after the commit (`ckstore note`)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.commit, name)

    @property
    def parents(self) -> list[str]:
        """Parent ids, hex, as history goes: a parent retention dropped is replaced by the kept commits behind it
        (the stored ids stay in `stored_parents`)."""
        return [p.hex() for p in (self.commit.parents if self.history is None else self.history)]

    @property
    def stored_parents(self) -> list[str]:
        """The parent ids the commit object records."""
        return [p.hex() for p in self.commit.parents]

    @property
    def dropped_parents(self) -> list[str]:
        """Stored parents that are no longer history (dropped by retention)."""
        live = set(self.parents)
        return [p for p in self.stored_parents if p not in live] if self.history is not None else []

    def to_dict(self) -> dict:
        """The commit as JSON-ready data."""
        c = self.commit
        d = {"id": self.id, "parents": self.parents, "manifest": c.manifest.hex(), "message": c.message,
             "author": c.author, "time": c.time, "step": c.step, "metrics": c.metrics, "params": c.params,
             "meta": {k: getattr(c, k) for k in META_SECTIONS}, "refs": list(self.refs)}
        if c.reverted_from:
            d["reverted_from"] = c.reverted_from.hex()
        if self.dropped_parents:
            d["dropped_parents"] = self.dropped_parents
        if self.notes:
            d["notes"] = self.notes
        return d


@dataclass(frozen=True)
class CommitResult:
    """A commit just made: the commit, the branch it moved, and what it cost (figures from the commit itself)."""

    info: CommitInfo
    branch: str
    files: int
    tensors: int
    logical_bytes: int
    new_bytes: int  # bytes of chunk frames this commit wrote (objects not counted)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.info, name)

    def to_dict(self) -> dict:
        """The commit and its figures as JSON-ready data."""
        return {**self.info.to_dict(), "branch": self.branch, "files": self.files, "tensors": self.tensors,
                "logical_bytes": self.logical_bytes, "new_bytes": self.new_bytes}


@dataclass(frozen=True)
class ShowInfo:
    """A commit with its manifest and storage figures."""

    commit: CommitInfo
    manifest: Manifest
    logical_bytes: int   # the files' sizes
    stored_bytes: int    # the stored frames of every chunk the commit uses
    new_bytes: int       # the stored frames of chunks no parent uses
    describe: str = ""   # nearest alias or tag, distance, id (`ckstore describe`)
    name: str | None = None  # the artifact name under the config's name template

    def to_dict(self) -> dict:
        """The commit, its files and tensors, and its storage figures as JSON-ready data."""
        return {**self.commit.to_dict(), "logical_bytes": self.logical_bytes, "stored_bytes": self.stored_bytes,
                "new_bytes": self.new_bytes, "describe": self.describe, "name": self.name,
                "files": [{"path": f.path, "size": f.size, "hash": f.hash.hex()} for f in self.manifest.files],
                "tensors": [{"name": t.name, "file": t.file, "dtype": t.dtype, "shape": list(t.shape),
                             "nbytes": t.nbytes, "chunks": len(t.chunks), "stats": t.stats}
                            for t in self.manifest.tensors]}


@dataclass(frozen=True)
class FileInfo:
    """A committed file: its path, size in bytes and BLAKE3 hash (hex)."""

    path: str
    size: int
    hash: str

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {"path": self.path, "size": self.size, "hash": self.hash}

    def __getitem__(self, key: str) -> Any:  # listings were dicts before; keep `f["path"]` working
        return self.to_dict()[key]


@dataclass(frozen=True)
class BranchInfo:
    """A branch: its name, the commit it points at, and whether HEAD names it."""

    name: str
    id: str
    current: bool = False

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {"name": self.name, "id": self.id, "current": self.current}


@dataclass(frozen=True)
class TagInfo:
    """A tag: its name, the commit it marks, and its message (empty for a lightweight tag)."""

    name: str
    id: str
    message: str = ""

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {"name": self.name, "id": self.id, "message": self.message}


@dataclass(frozen=True)
class ResetResult:
    """A branch moved by reset: from `old` (None if it was empty) to `new`."""

    branch: str
    old: str | None
    new: str

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {"branch": self.branch, "old": self.old, "new": self.new}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One ref change in the audit log: who moved which ref from what to what, when and why, chained by hash."""

    seq: int
    time: float
    user: str
    host: str
    pid: int
    action: str
    ref: str
    old: str | None
    new: str | None
    message: str
    prev: str
    hash: str
    sig: str | None = None     # an SSH signature over "ckstore audit SEQ HASH", when signing is configured
    signer: str | None = None  # the principal who signed

    def body(self) -> dict:
        """The entry without its own hash and signature: what the hash covers."""
        return {k: getattr(self, k) for k in self.__slots__ if k not in ("hash", "sig", "signer")}

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {k: getattr(self, k) for k in self.__slots__ if k not in ("sig", "signer") or getattr(self, k)}

    def __getitem__(self, key: str) -> Any:  # entries were dicts before; keep `e["action"]` working
        return self.to_dict()[key]


@dataclass
class SyncResult:
    """What a push, fetch, pull, clone or on-demand fetch did."""

    action: str
    remote: str
    url: str
    refs: list[dict] = field(default_factory=list)      # {ref, old, new, status, forced}
    commits: int = 0
    objects: int = 0
    chunks: int = 0
    packs: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    logical_bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    checked_out: str | None = None                       # clone --checkout: where the files were written

    @property
    def bytes_transferred(self) -> int:
        """Bytes sent plus bytes received."""
        return self.bytes_sent + self.bytes_received

    @property
    def refs_updated(self) -> list[dict]:
        """The refs that moved."""
        return [r for r in self.refs if r["status"] not in ("up-to-date", "ahead")]

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {**asdict(self), "bytes_transferred": self.bytes_transferred}

    def summary(self) -> str:
        """One line: refs moved, what was transferred, and its logical size."""
        moved = (f"{human_bytes(self.bytes_sent)} sent" if self.action == "push"
                 else f"{human_bytes(self.bytes_received)} received")
        return (f"{self.action} {self.remote} ({self.url}): {len(self.refs_updated)} refs updated, "
                f"{self.commits} commits, {self.objects} objects, {self.chunks} chunks in {self.packs} packs; "
                f"{moved} for {human_bytes(self.logical_bytes)} logical")


@dataclass
class Problem:
    """One damaged thing fsck found."""

    kind: str  # pack, index, chunk, object, ref, audit, config, cache
    id: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind} {self.id}: {self.message}" if self.id else f"{self.kind}: {self.message}"

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {"kind": self.kind, "id": self.id, "message": self.message}


@dataclass
class FsckReport:
    """What fsck checked and the problems it found (none: the repository is sound)."""

    problems: list[Problem] = field(default_factory=list)
    packs: int = 0
    chunks: int = 0
    objects: int = 0
    commits: int = 0
    refs: int = 0
    not_fetched: int = 0  # chunks a partial clone has not fetched yet (not a problem)
    affected: list[str] = field(default_factory=list)  # commits that cannot be read whole because of the damage
    damaged_packs: list[str] = field(default_factory=list)  # packs with any problem (pack, .idx or frame)

    @property
    def ok(self) -> bool:
        """No problems."""
        return not self.problems

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {"ok": self.ok, "packs": self.packs, "chunks": self.chunks, "objects": self.objects,
                "commits": self.commits, "refs": self.refs, "not_fetched": self.not_fetched, "affected": self.affected,
                "damaged_packs": self.damaged_packs,
                "problems": [p.to_dict() for p in self.problems]}


@dataclass
class RepairResult:
    """What a repair did, and the fsck reports before and after it."""

    before: FsckReport
    after: FsckReport
    quarantined: list[str] = field(default_factory=list)  # paths under .ckstore/quarantine/
    salvaged_chunks: int = 0
    fetched_chunks: int = 0
    fetched_objects: int = 0
    missing_chunks: int = 0  # still missing after the repair
    missing_objects: int = 0

    @property
    def ok(self) -> bool:
        """The repository is sound after the repair."""
        return self.after.ok

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {"ok": self.ok, "quarantined": self.quarantined, "salvaged_chunks": self.salvaged_chunks,
                "fetched_chunks": self.fetched_chunks, "fetched_objects": self.fetched_objects,
                "missing_chunks": self.missing_chunks, "missing_objects": self.missing_objects,
                "before": self.before.to_dict(), "after": self.after.to_dict()}


@dataclass
class GcResult:
    """What a gc did (or, with dry_run, would do). Swept bytes go to tombstones first; freed bytes are gone."""

    dry_run: bool
    grace: float
    live_commits: int = 0
    live_chunks: int = 0
    packs_kept: int = 0
    packs_swept: int = 0          # unreferenced packs moved to tombstones by this run
    objects_swept: int = 0
    bytes_swept: int = 0
    young_skipped: int = 0        # unreferenced packs and objects younger than the grace period, left alone
    sets_deleted: int = 0         # tombstone sets past their grace, deleted
    bytes_freed: int = 0
    revived: int = 0              # tombstoned packs and objects referenced again, moved back
    repacked: int = 0             # packs rewritten by repack
    repack_freed: int = 0
    tombstoned_bytes: int = 0     # still held in tombstones after the run
    partly_garbage: list[dict] = field(default_factory=list)  # {pack, size, unused}: repack's candidates
    disk_before: int = 0          # bytes of packs/, objects/ and tombstones/ before the run, and after it
    disk_after: int = 0

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return asdict(self)

    def summary(self) -> str:
        """One line of what happened."""
        verb = "would sweep" if self.dry_run else "swept"
        line = (f"gc: {self.live_commits} commits kept; {verb} {self.packs_swept} packs and {self.objects_swept} "
                f"objects ({human_bytes(self.bytes_swept)}) to tombstones; deleted {human_bytes(self.bytes_freed)} "
                f"from {self.sets_deleted} tombstone sets; {human_bytes(self.tombstoned_bytes)} still in tombstones")
        if self.disk_after and not self.dry_run:
            change = self.disk_before - self.disk_after
            # more on disk after a run is what a repack wrote while its old packs wait out the grace period
            said = (f"{human_bytes(change)} freed" if change >= 0 else
                    f"{human_bytes(-change)} more until the tombstones' grace period ends")
            line += f"; on disk {human_bytes(self.disk_before)} -> {human_bytes(self.disk_after)} ({said})"
        return line


@dataclass
class Kept:
    """One commit a retention policy looked at: kept (with the rules that keep it) or dropped."""

    id: str
    time: float
    group: str
    step: int | None
    message: str
    reasons: list[str] = field(default_factory=list)  # empty: dropped

    @property
    def kept(self) -> bool:
        """Whether any rule keeps it."""
        return bool(self.reasons)

    def to_dict(self) -> dict:
        """JSON-ready data: the decision with its reasons."""
        return {**asdict(self), "kept": self.kept}


@dataclass
class ForgetResult:
    """What a retention policy kept and dropped, the refs it deleted, and the bytes gc would then free."""

    policy: str
    dry_run: bool
    commits: list[Kept] = field(default_factory=list)
    refs_deleted: list[str] = field(default_factory=list)
    bytes_freed: int = 0   # what gc frees once the dropped commits are unreachable (mark before minus after)

    @property
    def kept(self) -> list[Kept]:
        """The commits kept."""
        return [c for c in self.commits if c.kept]

    @property
    def dropped(self) -> list[Kept]:
        """The commits dropped."""
        return [c for c in self.commits if not c.kept]

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {"policy": self.policy, "dry_run": self.dry_run, "kept": len(self.kept), "dropped": len(self.dropped),
                "refs_deleted": self.refs_deleted, "bytes_freed": self.bytes_freed,
                "commits": [c.to_dict() for c in self.commits]}


@dataclass
class DuRow:
    """Storage of one commit, branch, tag or remote: logical size, stored bytes, bytes only it keeps, shared."""

    name: str
    kind: str            # commit, branch, tag, remote, total
    logical: int = 0
    stored: int = 0      # frames and objects it needs, each counted once
    unique: int = 0      # what dropping it frees (net of re-encoding kept chunks that were deltas against it)
    shared: int = 0      # stored - unique
    commits: int = 0
    extra: dict = field(default_factory=dict)  # replicas, cost, where (local / archived)

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return asdict(self)


@dataclass
class DuReport:
    """`du`: one row per item, and the repository's totals, which add up to the bytes on disk."""

    by: str
    rows: list[DuRow] = field(default_factory=list)
    disk: dict = field(default_factory=dict)  # packs, objects, referenced, unreferenced, overhead, tombstones, total

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {"by": self.by, "rows": [r.to_dict() for r in self.rows], "disk": self.disk}


def metric_value(info: CommitInfo, name: str) -> Any:
    """A commit's value for `name`: a metric ("val_loss") or a dotted path ("notes.eval.acc", "params.lr");
    None when it has none."""
    try:
        path = parse_path(name) if "." in name else ("metrics", name)
    except QuerySyntaxError:
        path = ("metrics", name)
    d: Any = info.to_dict()
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None
    return info.metrics.get(name) if d is None else d  # a metric may have a dot in its name


def json_safe(value: Any) -> Any:
    """`value` with non-finite floats replaced by None, so it is valid JSON (NaN and Infinity are not)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
