"""`forget`: apply a retention policy. It rewrites nothing: dropped commits get a record (so history walks pass
through them), refs naming only dropped commits are deleted, and gc frees the bytes later."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..errors import CkstoreError, UsageError
from ..model import graph
from ..model.refnames import ALIASES, TAGS, short
from ..model.retention import Candidate, Policy, decide
from ..results import ForgetResult, Kept
from ..storage.records import Dropped
from .accounting import stored_bytes
from .notes import NotesView
from .reach import mark, roots
from .repository import Repository

TAG_GROUP = "(tags)"
SIGNATURES = "signatures"  # engine.signatures.NS (a signature is no reason to keep a commit)


def candidates(repo: Repository) -> list[Candidate]:
    """Every commit the refs reach, with its groups (the branches and remote-tracking branches reaching it;
    commits only tags reach form one more group), the refs naming it, and whether a tag does."""
    groups: dict[bytes, list[str]] = {}
    names: dict[bytes, list[str]] = {}
    tips: dict[bytes, list[str]] = {}
    tagged: set[bytes] = set()
    tag_tips = []
    for name, tip in repo.commit_refs().items():
        names.setdefault(tip, []).append(short(name))
        if name.startswith((TAGS, ALIASES)):  # an alias is a name like a tag: kept by --keep-tagged
            tagged.add(tip)
            tag_tips.append(tip)
            continue
        tips.setdefault(tip, []).append(short(name))
        for c in graph.ancestors(tip, repo.parents):
            groups.setdefault(c, []).append(short(name))
    for tip in tag_tips:
        for c in graph.ancestors(tip, repo.parents):
            groups.setdefault(c, [TAG_GROUP])
    noted = _noted(repo)
    out = []
    for oid, group in groups.items():
        commit = repo.commit(oid)
        out.append(Candidate(oid, commit.time, dict(commit.metrics), tuple(group), tuple(names.get(oid, ())),
                             tuple(tips.get(oid, ())), oid in tagged, noted=oid in noted))
    return out


def _noted(repo: Repository) -> set[bytes]:
    """Commits with notes in any namespace but signatures."""
    view = NotesView(repo)
    return {oid for oid in view.noted() if set(view.of(oid)) - {SIGNATURES}}


@dataclass
class Plan:
    """What a policy decides over a history (a local repository, or a remote's view of one)."""

    decided: list[Candidate]         # every commit, newest first, with the rules keeping it
    dropped: list[Candidate]
    tags: dict[str, bytes]           # tags naming only dropped commits: deleted
    records: dict[bytes, Dropped]    # the records the dropped commits get

    def result(self, source: Any, policy: Policy, dry_run: bool, freed: int) -> ForgetResult:
        """The ForgetResult reporting this plan (`source` gives each commit's step and message)."""
        out = ForgetResult(policy.describe(), dry_run, refs_deleted=[short(t) for t in self.tags], bytes_freed=freed)
        for c in self.decided:
            commit = source.commit(c.oid)
            out.commits.append(Kept(c.oid.hex(), c.time, ", ".join(c.groups), commit.step, commit.message,
                                    list(c.reasons)))
        return out


def plan(source: Any, policy: Policy, now: float) -> Plan:
    """Apply `policy` to `source` (a Repository, or any history offering refs.list, commit_refs, peel, parents and
    commit): the one decision local and remote retention share."""
    decided = decide(candidates(source), policy, now)
    dropped = [c for c in decided if not c.reasons]
    gone = {c.oid for c in dropped}
    tags = {name: oid for name, oid in source.refs.list(TAGS).items() if _peel(source, oid) in gone}
    records = {c.oid: Dropped(c.oid, source.commit(c.oid).parents, now, policy.describe()) for c in dropped}
    return Plan(decided, dropped, tags, records)


def forget(repo: Repository, policy: Policy, *, dry_run: bool = False, now: float | None = None) -> ForgetResult:
    """Keep what `policy` keeps, drop the rest (with `dry_run`, only report). The result lists every commit with
    the rules keeping it, the refs deleted, and the bytes gc (with repack) frees once they are unreachable."""
    now = time.time() if now is None else now
    p = plan(repo, policy, now)
    dropped, records, refs_deleted = p.dropped, p.records, list(p.tags)
    gone = set(records)
    start = roots(repo, grace=0.0)
    before = stored_bytes(repo, mark(repo, start))
    kept_roots = {oid: why for oid, why in start.items()
                  if why not in refs_deleted and _peel(repo, oid) not in gone}
    after = stored_bytes(repo, mark(repo, kept_roots, dropping=records))
    result = p.result(repo, policy, dry_run, max(0, before - after))
    if dry_run or not dropped:
        return result
    repo.dropped.add(list(records.values()))
    for name in refs_deleted:
        old = repo.refs.read(name)
        repo.refs.update(name, None, old, action="forget", message=f"policy: {policy.describe()}")
    repo.refs.audit.append("forget", "dropped/", None, None,
                           f"{len(dropped)} commits dropped, {len(p.decided) - len(dropped)} kept; "
                           f"policy: {policy.describe()}")
    return result


def _peel(repo: Repository, oid: bytes) -> bytes | None:
    try:
        return repo.peel(oid)
    except CkstoreError:
        return None


def saved_policy(repo: Repository) -> Policy:
    """The policy saved in the repository config (UsageError when there is none)."""
    raw = repo.config.retention.get("policy") if repo.config.retention else None
    if not raw:
        raise UsageError("no retention policy is saved in this repository",
                         hint="give one (e.g. `ckstore forget --keep-last 5 --keep-best 3 --metric val_loss`), "
                              "and add --save to keep it for next time")
    return Policy.from_dict(raw)
