"""Governance across clones: notes and aliases travel with push and fetch, a remote's protection rules bind its
pushers, and a remote keeps write-once copies of the audit log's head.

- Notes (`refs/notes/NS`): a push uploads the note objects the remote lacks and moves the ref by compare-and-swap;
  when the remote's head is not in our history, its notes are fetched first and the two heads merged (union), so
  additions from two clones both survive. A fetch does the same merge into the local ref.
- Aliases (`refs/aliases/NAME`): a move chain moves forward only. A push uploads the moves the remote lacks (their
  commits travel as any pushed commit does); an alias the remote moved meanwhile is left alone with a warning. A
  fetch takes the remote's chain when it extends ours.
- The remote's config may carry a `protect` table (`protect --remote`): a push obeys the remote's rules, not the
  pusher's, so a pusher cannot lift them by editing its own config.
- `audit/heads/<seq>-<hash>` (write-once, if-absent): after each push, the local audit log's newest entry. A local
  log rewritten below a recorded head no longer has that entry: `verify_anchors` names it.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..engine import notes as note_rules
from ..engine.protect import rule_for
from ..engine.repository import Repository
from ..errors import CkstoreError, CorruptObject, NonFastForward, ProtectedRef, RemoteError
from ..fs.fileio import write_atomic
from ..model import graph
from ..model.objects import AliasMove, Note
from ..model.refnames import ALIASES, NOTES
from ..results import SyncResult
from . import session
from .remote_refs import move_ref, read_ref
from .session import Session, obj_key, verified_object

ANCHORS = "audit/heads/"
CHECKED = ("promote", "rollback")


# -- objects ----------------------------------------------------------------------------------------------------

def _remote_object(remote: Session, oid: bytes, kind: type) -> tuple[bytes, Any]:
    data = remote.get_small(obj_key(oid), session.MAX_COMMIT + session.MAX_COMMIT // 128 + 4096)
    if data is None:
        raise RemoteError(f"{remote.url}: object {oid.hex()} is missing", url=remote.url, key=obj_key(oid))
    obj = verified_object(oid, data, remote.url, session.MAX_COMMIT, scheme=remote.scheme)
    if not isinstance(obj, kind):
        raise CorruptObject("object", oid.hex(), oid.hex(), detail=f"on {remote.url}: expected a {kind.__name__}")
    return data, obj


def _download_chain(repo: Repository, remote: Session, head: bytes, kind: type, links) -> int:
    """Bring a remote history of `kind` objects (notes or alias moves) into the local store, verified; returns how
    many objects were new here."""
    stack, seen, new = [head], set(), 0
    while stack:
        oid = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        if repo.store.has_object(oid):
            continue  # a local object's own history is here too (objects are written after what they name)
        data, obj = _remote_object(remote, oid, kind)
        stack.extend(links(obj))
        write_atomic(repo.store.object_path(oid), data, repo.store.tmp_dir, exclusive=True)
        new += 1
    return new


def _upload(repo: Repository, remote: Session, io: ThreadPoolExecutor, oids: list[bytes]) -> int:
    def put(oid: bytes) -> bool:
        data = repo.store.object_path(oid).read_bytes()
        verified_object(oid, data, "the local store", scheme=repo.store.scheme)
        return remote.put_new(obj_key(oid), data)
    return sum(io.map(put, oids))


# -- notes ------------------------------------------------------------------------------------------------------

def push_notes(repo: Repository, remote: Session, io: ThreadPoolExecutor, result: SyncResult) -> None:
    """Publish every local notes namespace, merging with what the remote holds first."""
    for ref, head in sorted(repo.refs.list(NOTES).items()):
        ns = ref.removeprefix(NOTES)
        old, etag = read_ref(remote, ref)
        if old == head:
            continue
        mine = note_rules.note_history(repo, head)
        if old is not None and old not in mine:
            _download_chain(repo, remote, old, Note, lambda n: n.parents)
            head = note_rules.merge_heads(repo, ns, old, expected=head)
            mine = note_rules.note_history(repo, head)
        theirs = note_rules.note_history(repo, old) if old is not None else {}
        result.objects += _upload(repo, remote, io, [o for o in mine if o not in theirs])
        move_ref(remote, ref, head, old, etag)
        result.refs.append({"ref": ref, "old": old.hex() if old else None, "new": head.hex(),
                            "status": "created" if old is None else "updated", "forced": False})


def fetch_notes(repo: Repository, remote: Session, io: ThreadPoolExecutor, result: SyncResult) -> None:
    """Merge every remote notes namespace into the local one (union: both clones' notes survive)."""
    for key in remote.list(NOTES.rstrip("/")):
        ns = key[len(NOTES):]
        try:
            theirs, _ = read_ref(remote, key)
            if theirs is None:
                continue
            _download_chain(repo, remote, theirs, Note, lambda n: n.parents)
            mine = repo.refs.read(key)
            head = note_rules.merge_heads(repo, ns, theirs, expected=mine)
        except CkstoreError as exc:
            result.warnings.append(f"notes {ns} from {remote.url} not taken: {exc}")
            continue
        if head != mine:
            result.refs.append({"ref": key, "old": mine.hex() if mine else None, "new": head.hex(),
                                "status": "merged" if mine else "created", "forced": False})


# -- aliases ----------------------------------------------------------------------------------------------------

def alias_chain(repo: Repository, head: bytes) -> list[tuple[bytes, AliasMove]]:
    """The moves from `head` back to the first, newest first (local objects)."""
    out, cur = [], head
    while cur is not None:
        move = repo.store.get_object(cur)
        if not isinstance(move, AliasMove):
            raise CorruptObject("object", cur.hex(), cur.hex(), detail="an alias history leads to another object")
        out.append((cur, move))
        cur = move.previous
    return out


def check_alias_push(repo: Repository, rules: dict, ref: str, old: bytes | None, new: bytes) -> list[bytes]:
    """The moves a push of alias `ref` from the remote's `old` to our `new` publishes (newest first), checked
    against the remote's protection rules; NonFastForward when the remote's chain is not part of ours."""
    chain = alias_chain(repo, new)
    ids = [oid for oid, _ in chain]
    if old is not None and old not in ids:
        raise NonFastForward(f"alias {ref.removeprefix(ALIASES)} on the remote moved since this clone saw it",
                             hint="fetch first: the alias takes the remote's moves, then move it again")
    fresh = chain[: ids.index(old)] if old is not None else chain
    rule = rule_for(rules, ref)
    if rule is not None:
        before = next((m.target for oid, m in chain if oid == old), None)
        for _, move in reversed(fresh):
            if rule.require_checks and move.action not in CHECKED:
                raise ProtectedRef(f"{ref} is protected on the remote (checked moves only): the move to "
                                   f"{(move.target or b'').hex()[:12] or 'nothing'} was a plain {move.action}",
                                   hint="move it with `ckstore promote` (or rollback) and push again")
            if move.target is None and rule.no_delete:
                raise ProtectedRef(f"{ref} is protected on the remote: it may not be deleted")
            if (rule.ff_only and before is not None and move.target is not None
                    and not graph.is_ancestor(before, move.target, repo.parents)):
                raise ProtectedRef(f"{ref} is protected on the remote (fast-forward only)")
            before = move.target if move.target is not None else before
    return [oid for oid, _ in fresh]


def upload_moves(repo: Repository, remote: Session, io: ThreadPoolExecutor, moves: list[bytes]) -> int:
    """Upload alias moves oldest first (a move is written after the one it names)."""
    return sum(_upload(repo, remote, io, [m]) for m in reversed(moves))


def remote_aliases(repo: Repository, remote: Session, warnings: list[str]) -> dict[str, bytes]:
    """{alias ref: the remote's newest move}, with each chain downloaded and verified into the local store."""
    out = {}
    for key in remote.list(ALIASES.rstrip("/")):
        try:
            head, _ = read_ref(remote, key)
            if head is not None:
                _download_chain(repo, remote, head, AliasMove, lambda m: (m.previous,) if m.previous else ())
                out[key] = head
        except CkstoreError as exc:
            warnings.append(f"alias {key.removeprefix(ALIASES)} from {remote.url} not taken: {exc}")
    return out


def take_aliases(repo: Repository, theirs: dict[str, bytes], result: SyncResult, url: str) -> None:
    """Move local aliases forward to the remote's when the remote's chain extends ours."""
    for ref, head in sorted(theirs.items()):
        mine = repo.refs.read(ref)
        if mine == head:
            continue
        their_ids = [oid for oid, _ in alias_chain(repo, head)]
        if mine is not None and mine not in their_ids:
            if head not in [oid for oid, _ in alias_chain(repo, mine)]:
                result.warnings.append(f"alias {ref.removeprefix(ALIASES)} moved here and on {url}: kept ours "
                                       "(move it again to settle it)")
            continue
        repo.refs.update(ref, head, mine, action="fetch", message=url)
        result.refs.append({"ref": ref, "old": mine.hex() if mine else None, "new": head.hex(),
                            "status": "created" if mine is None else "updated", "forced": False})


def alias_targets(repo: Repository, heads: dict[str, bytes]) -> list[bytes]:
    """Every commit the given alias chains name (a fetch brings them all: rollback needs them)."""
    return list(dict.fromkeys(m.target for head in heads.values() for _, m in alias_chain(repo, head)
                              if m.target is not None))


# -- audit anchors ------------------------------------------------------------------------------------------------

def anchor_audit(repo: Repository, remote: Session) -> None:
    """Leave the local audit log's newest entry on the remote, write-once."""
    entries = repo.refs.audit.entries()
    if entries:
        last = entries[-1]
        body = json.dumps({"seq": last.seq, "hash": last.hash, "time": last.time, "user": last.user}).encode()
        remote.put_new(f"{ANCHORS}{last.seq:012d}-{last.hash}", body)


def verify_anchors(repo: Repository, remote: Session) -> list[str]:
    """Problems of the local audit log against the heads the remote recorded: each must still be in the log."""
    local = {e.seq: e.hash for e in repo.refs.audit.entries()}
    problems = []
    for key in remote.list(ANCHORS.rstrip("/")):
        name = key[len(ANCHORS):]
        seq_text, _, h = name.partition("-")
        if not seq_text.isdigit() or len(h) != 64:
            continue
        seq = int(seq_text)
        if seq not in local:
            problems.append(f"audit log: entry {seq}, recorded by {remote.url}, is gone (the log was cut or "
                            "rewritten)")
        elif local[seq] != h:
            problems.append(f"audit log: entry {seq} differs from the copy {remote.url} recorded (the log was "
                            "rewritten)")
    return problems


# -- a remote's protection rules --------------------------------------------------------------------------------

def set_remote_protect(remote: Session, pattern: str, flags: dict | None) -> dict:
    """Set (flags None: remove) one protection rule in the remote's config, by compare-and-swap; returns the
    remote's rules."""
    def change(raw: dict) -> None:
        rules = dict(raw.get("protect") or {})
        if flags is None:
            rules.pop(pattern, None)
        else:
            rules[pattern] = flags
        raw["protect"] = rules
        if not rules:
            raw.pop("protect")

    return session.edit_remote_config(remote, change).get("protect") or {}


def on_remote(repo: Repository, name: str, work):
    """Run `work(session)` against the remote `name` of `repo`, closing it after."""
    from ..storage import remotes
    from .session import open_spec
    spec = remotes.get(repo.dir, name)
    remote = Session(open_spec(spec, create=False), spec.name, repo.store.scheme)
    try:
        return work(remote)
    finally:
        remote.t.close()
