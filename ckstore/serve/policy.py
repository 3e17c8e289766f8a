"""Who may write which key, and the remote's protected refs, decided on the server.

What a push writes (sync/push.py, session.py, remote_leases.py, governance.py), every key create-only unless said:

    config                                  on an empty remote only (the pusher's config seeds it)
    HEAD                                    on a remote that has none
    locks/lease-<32 hex>                    created, then overwritten to renew and to release it
    packs/<ab>/<64 hex>.pack|.idx           hash-named
    objects/<ab>/<62 hex>                   hash-named (commits, manifests, tags, notes, alias moves)
    dropped/<64 hex>                        a dropped commit's record
    logs/push/<time>-<hex>.json             the remote's push log
    audit/heads/<seq>-<hash>                write-once anchors of the pusher's audit log
    refs/...                                by compare-and-swap (create-only, or If-Match), only where a push
                                            scope's glob matches the ref

A push deletes nothing; deletes (gc, stale leases), the gc lock, and rewrites of config and HEAD are admin's, save
one: raising the config to a newer format version by adding features (`adds_features_only`), by compare-and-swap.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..engine.protect import rule_for
from ..errors import CkstoreError, CorruptObject, RemoteNotFound, UsageError
from ..model import graph
from ..model.objects import AliasMove, Commit, Note, Tag, decode_object
from ..storage.config import check_version
from ..storage.store import decompress_object
from ..transport.directory import DirectoryTransport
from .tokens import Token

_CREATE_ONLY = [re.compile(p) for p in (
    r"^packs/[0-9a-f]{2}/[0-9a-f]{64}\.(pack|idx)$",
    r"^objects/[0-9a-f]{2}/[0-9a-f]{62}$",
    r"^dropped/[0-9a-f]{64}$",
    r"^logs/push/[0-9A-Za-z.\-]{1,80}\.json$",
    r"^audit/heads/[0-9]{1,20}-[0-9a-f]{8,128}$",
    r"^config$",
    r"^HEAD$",
)]
_LEASE = re.compile(r"^locks/lease-[0-9a-f]{32}$")
_HEX64 = re.compile(rb"^[0-9a-f]{64}\n?$")
MAX_WALK = 100_000                  # objects read at most to decide a fast-forward


class Forbidden(CkstoreError):
    """The token lacks the scope a request needs (HTTP 403); `.scope` names the scope that would do."""

    def __init__(self, message: str, scope: str) -> None:
        super().__init__(message)
        self.scope = scope


class Refused(CkstoreError):
    """A ref write the remote's protection rules forbid (HTTP 403, whoever asks)."""


@dataclass(frozen=True)
class Write:
    """One write request: PUT (`data` set) or DELETE (`data` None), with its precondition."""

    key: str
    data: bytes | None
    if_absent: bool = False
    if_match: str | None = None

    @property
    def op(self) -> str:
        """"put" or "delete"."""
        return "delete" if self.data is None else "put"


def check_read(token: Token) -> None:
    """Every scope reads: a token exists only to be used."""
    if not token.scopes:
        raise Forbidden(f"the token {token.name!r} has no scope", "read")


def check_write(token: Token, w: Write) -> None:
    """Forbidden, naming the scope that would do, unless `token` may make this write."""
    if token.admin:
        return
    need_admin = Forbidden(f"the token {token.name!r} may not {w.op} {w.key!r}: that needs the admin scope "
                           "(a push creates only new keys and moves refs by compare-and-swap)", "admin")
    if not token.push_globs:
        raise Forbidden(f"the token {token.name!r} is read-only: {w.op} {w.key!r} needs a push or admin scope",
                        "push" if w.key.startswith("refs/") else "admin")
    if w.op == "delete":
        raise need_admin
    if w.key.startswith("refs/"):
        if not (w.if_absent or w.if_match):
            raise need_admin
        if not token.may_push_ref(w.key):
            raise Forbidden(f"the token {token.name!r} may not move {w.key}: its push scopes cover only "
                            f"{', '.join(token.push_globs)}", f"push:{w.key}")
        return
    if _LEASE.match(w.key) and w.if_match is None:
        return
    if w.if_absent and any(p.match(w.key) for p in _CREATE_ONLY):
        return
    raise need_admin


def adds_features_only(old: bytes, new: bytes) -> bool:
    """Whether config `new` is `old` raised to version 3 with features added and nothing else changed: the one
    config rewrite a push makes (sync.session.add_remote_features), so push tokens may make it."""
    try:
        before, after = json.loads(old), json.loads(new)
        if not isinstance(before, dict) or not isinstance(after, dict):
            return False
        check_version(after, "config")
    except (ValueError, UnicodeDecodeError, CkstoreError):
        return False
    rest = ("version", "features", "check")
    kept = set(before.get("features") or []) <= set(after.get("features") or [])
    return kept and {k: v for k, v in before.items() if k not in rest} == {
        k: v for k, v in after.items() if k not in rest}


# -- protected refs ---------------------------------------------------------------------------------------------

def remote_settings(t: DirectoryTransport) -> dict[str, Any]:
    """The remote's config as a table ({} when it has none)."""
    try:
        raw = json.loads(t.get("config", 0, 1 << 20))
    except RemoteNotFound:
        return {}
    except (ValueError, UnicodeDecodeError):
        raise Refused("the remote's config is damaged: ref writes are refused until an admin repairs it") from None
    return raw if isinstance(raw, dict) else {}


def ref_value(data: bytes, key: str) -> bytes:
    """The id a ref's bytes hold; UsageError unless they are 64 hex digits (and a newline)."""
    if not _HEX64.match(data):
        raise UsageError(f"{key}: a ref holds a 64-digit hex id and a newline, not {data[:80]!r}")
    return bytes.fromhex(data[:64].decode())


class RemoteObjects:
    """Objects of a directory remote by id, verified, for walking history (commit parents, note and alias chains,
    a tag's target) on the server."""

    def __init__(self, t: DirectoryTransport) -> None:
        self.t = t
        self.read = 0

    def links(self, oid: bytes) -> tuple[bytes, ...]:
        """What the object `oid` points back to; () when it is missing, damaged or a leaf."""
        self.read += 1
        if self.read > MAX_WALK:
            raise Refused(f"the history behind this ref is longer than {MAX_WALK} objects: ask an admin to move it")
        h = oid.hex()
        try:
            obj = decode_object(decompress_object(oid, self.t.get(f"objects/{h[:2]}/{h[2:]}")), oid)
        except (RemoteNotFound, CorruptObject):
            return ()
        if isinstance(obj, (Commit, Note)):
            return tuple(obj.parents)
        if isinstance(obj, AliasMove):
            return (obj.previous,) if obj.previous else ()
        if isinstance(obj, Tag):
            return (obj.target,)
        return ()


def check_ref_write(t: DirectoryTransport, token: Token, key: str, old: bytes | None, new: bytes | None) -> None:
    """Refused, naming the rule, if writing the ref `key` from the bytes `old` to `new` (None: absent, deleting)
    breaks the remote's protection: no_delete and ff_only bind every token; require_checks refs move only by
    admin tokens. Unprotected refs are bytes like any key; a protected one must be given a 64-digit id."""
    settings = remote_settings(t)
    try:
        rule = rule_for(settings.get("protect") if isinstance(settings.get("protect"), dict) else {}, key)
    except UsageError as exc:
        raise Refused(f"the remote's protection rules are malformed ({exc}): ref writes are refused") from None
    if rule is None or old == new:
        return
    where = f"{key} is protected on this remote ({rule.describe()}; rule {rule.pattern!r})"
    if new is None:
        if rule.no_delete and old is not None:
            raise Refused(f"{where}: it may not be deleted")
        return
    if rule.require_checks and not token.admin:
        raise Refused(f"{where}: only an admin token may move it (the server cannot see that checks passed)")
    if not rule.ff_only or old is None:
        return
    if settings.get("encryption"):
        # sealed refs and objects: the server cannot read history, so it cannot see a fast-forward
        if not token.admin:
            raise Refused(f"{where}: the remote is encrypted, so the server cannot check a fast-forward; only an "
                          "admin token may move it")
        return
    new_id = ref_value(new, key)
    try:
        old_id = ref_value(old, key)
    except UsageError:
        return              # a damaged value protects no history: writing a good one repairs it
    if not graph.is_ancestor(old_id, new_id, RemoteObjects(t).links):
        raise Refused(f"{where}: {new_id.hex()[:12]} does not contain {old_id.hex()[:12]} (not a fast-forward)")
