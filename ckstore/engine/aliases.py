"""Aliases: movable names (champion, staging) apart from branches, each move an object naming the one before it.

`refs/aliases/NAME` holds the newest AliasMove; the chain of moves is the alias's history (who moved it, when,
from which commit to which, why), so it travels with push and fetch and survives a lost audit log. A move is a
compare-and-swap on the ref: of two clones moving one alias at once, exactly one wins. Deleting an alias is one
more move (to nothing): the history stays.
"""

from __future__ import annotations

import time

from ..errors import AlreadyExists, RefConflict, UnknownRevision, UsageError
from ..model.objects import AliasMove
from ..model.refnames import ALIASES, HEADS, TAGS, alias_ref, check_ref_name
from ..storage.audit import whoami
from ..storage.refs import ANY
from .repository import Repository

RESERVED = {"HEAD", "latest"}


def check_alias_name(repo: Repository, name: str) -> str:
    """`name` if it may name an alias: a valid ref name that is no branch, tag or reserved word."""
    check_ref_name(name)
    if name in RESERVED:
        raise UsageError(f"{name!r} is reserved", hint="`latest` and `HEAD` are resolved automatically")
    for prefix, kind in ((HEADS, "branch"), (TAGS, "tag")):
        if repo.refs.read(prefix + name) is not None:
            raise AlreadyExists(f"{name!r} is a {kind}: an alias needs a name of its own",
                                hint=f"pick another name, or use the {kind} itself")
    return name


def move_alias(repo: Repository, name: str, rev: str | None, reason: str, *, action: str = "set",
               expected: bytes | None | object = ANY, guard=None) -> tuple[bytes, AliasMove]:
    """Point alias `name` at `rev` (None: delete it), recording why. `expected`: the move id the caller saw
    (RefConflict if another move landed since; ANY: unconditional). `guard(current_target, new_target)` runs
    under the ref's lock, right before the move (protection rules, gates); it raises to refuse."""
    if not reason or not reason.strip():
        raise UsageError("moving an alias needs a reason", hint="pass --reason TEXT")
    check_alias_name(repo, name)
    target = repo.resolve(rev) if rev is not None else None
    ref = alias_ref(name)
    with repo.writing("alias"), repo.refs.locked(ref) as (current, set_ref):
        if expected is not ANY and current != expected:
            raise RefConflict(ref, expected.hex() if expected else None, current.hex() if current else None)
        before = holder_of(repo, current)
        if target is None and before is None:
            raise UnknownRevision(f"there is no alias {name!r}")
        if guard is not None:
            guard(before, target)
        move = AliasMove(name, target, current, whoami(), time.time(), reason, action)
        oid = repo.store.put_object(move)
        set_ref(oid, f"alias-{action}", f"{name}: {before.hex() if before else '-'} -> "
                                        f"{target.hex() if target else 'deleted'}: {reason}")
    return oid, move


def holder_of(repo: Repository, move_id: bytes | None) -> bytes | None:
    """The commit a move names (None for no move, or a deletion)."""
    if move_id is None:
        return None
    move = repo.store.get_object(move_id)
    if not isinstance(move, AliasMove):
        raise UnknownRevision(f"{move_id.hex()[:12]} is not an alias move")
    return move.target


def aliases(repo: Repository) -> dict[str, tuple[bytes, AliasMove]]:
    """Every alias that names a commit now: name -> (its newest move's id, that move)."""
    out = {}
    for ref, oid in repo.refs.list(ALIASES).items():
        move = repo.store.get_object(oid)
        if isinstance(move, AliasMove) and move.target is not None:
            out[ref.removeprefix(ALIASES)] = (oid, move)
    return out
