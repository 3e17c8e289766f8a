"""What the governance verbs return: notes, aliases and their moves, protection rules (pure data)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..model.objects import AliasMove, Note


@dataclass(frozen=True)
class NoteInfo:
    """One note: the commit it is about, its namespace and data, who added it, when and why."""

    id: str
    target: str | None
    ns: str
    data: dict
    message: str
    author: str
    time: float

    @classmethod
    def of(cls, oid: bytes, note: Note) -> NoteInfo:
        """From a stored note."""
        return cls(oid.hex(), note.target.hex() if note.target else None, note.ns, note.data, note.message,
                   note.author, note.time)

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return asdict(self)


@dataclass(frozen=True)
class AliasMoveInfo:
    """One move of an alias: from which commit to which (None: none / deleted), who, when, why and how."""

    id: str
    name: str
    old: str | None
    new: str | None
    author: str
    time: float
    reason: str
    action: str

    @classmethod
    def of(cls, oid: bytes, move: AliasMove, old: bytes | None) -> AliasMoveInfo:
        """From a stored move and the commit the alias held before it."""
        return cls(oid.hex(), move.name, old.hex() if old else None, move.target.hex() if move.target else None,
                   move.author, move.time, move.reason, move.action)

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return asdict(self)


@dataclass(frozen=True)
class AliasInfo:
    """An alias and the commit it names now."""

    name: str
    id: str
    last: AliasMoveInfo

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {"name": self.name, "id": self.id, "last": self.last.to_dict()}


@dataclass(frozen=True)
class ProtectionInfo:
    """A protection rule: the ref pattern and its flags."""

    pattern: str
    flags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return asdict(self)


@dataclass(frozen=True)
class CheckResult:
    """One check of a promotion: its name, verdict, what it said (an output tail) and how long it took."""

    name: str
    passed: bool
    detail: str
    seconds: float

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return asdict(self)


@dataclass
class PromotionResult:
    """A promotion or rollback: the alias, the candidate, the holder before, every check, and whether it moved."""

    alias: str
    candidate: str
    current: str | None
    checks: list[CheckResult] = field(default_factory=list)
    passed: bool = False
    moved: bool = False
    dry_run: bool = False
    action: str = "promote"
    reason: str = ""
    error: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {**asdict(self), "checks": [c.to_dict() for c in self.checks]}


@dataclass(frozen=True)
class MergeResult:
    """A merge: "merged" (a new two-parent commit), "fast-forward" or "up-to-date", and the branch's new tip."""

    status: str
    id: str
    commit: object | None = None  # the merge commit's CommitInfo when one was made

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {"status": self.status, "id": self.id,
                "commit": self.commit.to_dict() if self.commit is not None else None}
