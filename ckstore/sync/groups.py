"""Remote groups (replicas): a push to a group pushes to every member, each with its own result; fsck --remote of
a group checks each member."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..engine.repository import Repository
from ..errors import CkstoreError
from ..results import FsckReport, Problem, SyncResult
from ..storage import remotes


@dataclass
class GroupResult:
    """A push to a group: each member's SyncResult, and the members that failed with why."""

    group: str
    results: list[SyncResult] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every member was pushed."""
        return not self.failures

    @property
    def warnings(self) -> list[str]:
        """Every member's warnings, and one line per failed member."""
        out = [f"{r.remote}: {w}" for r in self.results for w in r.warnings]
        return out + [f"push to {m} failed: {why}" for m, why in self.failures.items()]

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {"group": self.group, "ok": self.ok, "results": [r.to_dict() for r in self.results],
                "failures": dict(self.failures)}

    def summary(self) -> str:
        """One line per member."""
        lines = [r.summary() for r in self.results]
        lines += [f"push {m}: FAILED: {why}" for m, why in self.failures.items()]
        return "\n".join(lines)


def push_group(repo: Repository, group: str, members: list[str], push: Callable[[str], SyncResult]) -> GroupResult:
    """Run `push(member)` for every member in order; a failing member is recorded and the others still pushed."""
    out = GroupResult(group)
    for m in members:
        try:
            out.results.append(push(m))
        except CkstoreError as exc:
            out.failures[m] = str(exc)
    return out


def check_group(members: list[str], check: Callable[[str], FsckReport]) -> FsckReport:
    """One report over every member: counts summed, each problem's detail naming its member."""
    total = FsckReport()
    for m in members:
        try:
            r = check(m)
        except CkstoreError as exc:
            total.problems.append(Problem("remote", m, f"[{m}] cannot be checked: {exc}"))
            continue
        for name in ("refs", "objects", "commits", "packs", "chunks"):
            setattr(total, name, getattr(total, name) + getattr(r, name))
        total.problems += [Problem(p.kind, p.id, f"[{m}] {p.message}") for p in r.problems]
        total.affected += r.affected
    return total


def members_of(repo: Repository, name: str | None) -> list[str] | None:
    """The members if `name` is a group, else None."""
    if name is None:
        return None
    return remotes.groups(repo.dir).get(name)
