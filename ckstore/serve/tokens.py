"""Bearer tokens of a served root: names, scopes and a SHA-256 of each secret in `<state>/tokens.json`.

A secret is `ckst_` + 43 URL-safe characters (256 random bits); it is shown once, when the token is added, and
only its hash is kept: a copy of the state directory lets nobody in. A request's secret is hashed and compared
with every stored hash by `hmac.compare_digest`, so the time taken says nothing about which one came close.

Scopes (docs/serve.md, "Tokens and scopes"):
    read                  GET, HEAD and LIST
    push:<ref glob>       read, plus the writes a push makes; refs only where they match a glob (several allowed)
    admin                 everything: gc's deletes, config and HEAD rewrites, protected refs with require_checks
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from ..errors import CkstoreError, UsageError
from ..fs.fileio import write_atomic
from ..fs.locks import file_lock
from ..model.refnames import check_ref_name

STATE_DIR = ".ckstore-serve"        # inside the served root; "." names are never remotes, so never keys
TOKENS = "tokens.json"
SECRET_PREFIX = "ckst_"
MAX_SECRET = 200                     # bytes of an Authorization header's token believed at most
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_DURATION = re.compile(r"^(\d{1,6})([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class TokenRefused(CkstoreError):
    """A request's token is missing, unknown, expired or revoked (HTTP 401)."""


def state_dir(root: str | os.PathLike) -> Path:
    """The state directory of the served root `root` (tokens, audit log)."""
    return Path(os.path.abspath(os.fspath(root))) / STATE_DIR


def hash_secret(secret: str) -> str:
    """The stored form of a secret: its SHA-256, hex."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def parse_duration(text: str) -> int:
    """Seconds in "30d", "12h", "90m", "45s" or "2w"; UsageError for anything else."""
    m = _DURATION.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise UsageError(f"cannot read the duration {text!r}", hint="write a positive number and a unit: 30d, 12h, "
                                                                   "90m, 45s or 2w")
    return int(m.group(1)) * _UNIT[m.group(2)]


def check_scope(scope: str) -> str:
    """`scope` when it is read, admin or push:<ref glob> (the glob a valid ref name with * and ?); else UsageError."""
    if scope in ("read", "admin"):
        return scope
    if scope.startswith("push:"):
        glob = scope[5:]
        if not glob.startswith("refs/"):
            raise UsageError(f"the scope {scope!r} names no ref glob under refs/",
                             hint="write push:refs/heads/team-* (or push:refs/* for every ref)")
        check_ref_name(glob.replace("*", "x").replace("?", "x"))
        return scope
    raise UsageError(f"unknown scope {scope!r}", hint="scopes are read, push:<ref glob> and admin")


@dataclass(frozen=True)
class Token:
    """A stored token: what it may do, where, and until when (no secret; `digest` is the secret's SHA-256)."""

    name: str
    digest: str
    scopes: tuple[str, ...]
    repos: tuple[str, ...] = ()          # empty: every remote under the root
    created: float = 0.0
    expires: float | None = None
    revoked: float | None = None

    @property
    def admin(self) -> bool:
        """True when the token holds the admin scope."""
        return "admin" in self.scopes

    @property
    def push_globs(self) -> tuple[str, ...]:
        """The ref globs of its push scopes."""
        return tuple(s[5:] for s in self.scopes if s.startswith("push:"))

    def may_push_ref(self, ref: str) -> bool:
        """True when a push scope's glob matches the full ref name `ref` (admin: always)."""
        return self.admin or any(fnmatch.fnmatchcase(ref, g) for g in self.push_globs)

    def may_use(self, repo: str) -> bool:
        """True when the token is good for the remote `repo`."""
        return not self.repos or repo in self.repos

    def public(self) -> dict:
        """The token as shown by `token list` (never the digest)."""
        return {"name": self.name, "scopes": list(self.scopes), "repos": list(self.repos), "created": self.created,
                "expires": self.expires, "revoked": self.revoked}


@dataclass
class TokenStore:
    """The tokens of a served root, read from `<state>/tokens.json` again whenever that file changes."""

    state: Path
    clock: Callable[[], float] = time.time
    _tokens: dict[str, Token] = field(default_factory=dict)
    _seen: tuple[int, int] | None = None

    @property
    def path(self) -> Path:
        """The tokens file."""
        return self.state / TOKENS

    def tokens(self) -> dict[str, Token]:
        """Every token by name, as the file holds them now (a revocation counts from the next request)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._tokens, self._seen = {}, None
            return {}
        mark = (st.st_mtime_ns, st.st_ino)
        if mark != self._seen:
            self._tokens, self._seen = self._read(), mark
        return self._tokens

    def _read(self) -> dict[str, Token]:
        try:
            raw = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise CkstoreError(f"cannot read the tokens file {self.path}: {exc}",
                               hint="restore it from a backup, or remove it and add the tokens again") from None
        return {name: Token(name, t["digest"], tuple(t["scopes"]), tuple(t.get("repos", ())), t.get("created", 0.0),
                            t.get("expires"), t.get("revoked")) for name, t in raw.get("tokens", {}).items()}

    def _write(self, tokens: dict[str, Token]) -> None:
        body = {"tokens": {n: {k: v for k, v in t.public().items() if k != "name"} | {"digest": t.digest}
                           for n, t in sorted(tokens.items())}}
        write_atomic(self.path, (json.dumps(body, indent=2) + "\n").encode(), self.state / "tmp")

    def add(self, name: str, scopes: list[str], repos: list[str] | None = None,
            expires_in: int | None = None) -> tuple[Token, str]:
        """Create a token; returns it and its secret (shown once, never stored)."""
        if not _NAME.match(name):
            raise UsageError(f"invalid token name {name!r}", hint="letters, digits and . _ @ -, at most 64")
        if not scopes:
            raise UsageError("a token needs at least one --scope", hint="read, push:<ref glob> or admin")
        scopes = [check_scope(s) for s in scopes]
        self.state.mkdir(parents=True, exist_ok=True)
        with file_lock(self.state / "tokens.lock"):
            tokens = dict(self.tokens())
            if name in tokens:
                raise UsageError(f"a token named {name!r} exists", hint="revoke it first, or pick another name")
            secret = SECRET_PREFIX + secrets.token_urlsafe(32)
            now = self.clock()
            token = Token(name, hash_secret(secret), tuple(dict.fromkeys(scopes)), tuple(repos or ()), now,
                          now + expires_in if expires_in else None)
            tokens[name] = token
            self._write(tokens)
        return token, secret

    def revoke(self, name: str) -> Token:
        """Mark a token revoked (kept, so the audit log's names stay explained); UsageError if there is none."""
        with file_lock(self.state / "tokens.lock"):
            tokens = dict(self.tokens())
            if name not in tokens:
                raise UsageError(f"no token named {name!r}", hint="see `ckstore serve token list`")
            token = tokens[name]
            if token.revoked is None:
                token = tokens[name] = replace(token, revoked=self.clock())
                self._write(tokens)
        return token

    def authenticate(self, secret: str | None) -> Token:
        """The live token whose secret this is; TokenRefused saying why not."""
        if not secret:
            raise TokenRefused("a bearer token is required: send 'Authorization: Bearer <token>'")
        digest = hash_secret(secret[:MAX_SECRET])
        found = None
        for token in self.tokens().values():     # every one compared: the time does not depend on the match
            if hmac.compare_digest(token.digest, digest):
                found = token
        if found is None:
            raise TokenRefused("the bearer token is not valid on this server")
        if found.revoked is not None:
            raise TokenRefused(f"the token {found.name!r} was revoked")
        if found.expires is not None and self.clock() >= found.expires:
            raise TokenRefused(f"the token {found.name!r} expired at "
                               f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(found.expires))}")
        return found
