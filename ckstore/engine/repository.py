"""The plumbing of one repository: its store, refs, config and thread pool; revisions resolved to commits."""

from __future__ import annotations

import json
import os
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from ..errors import (AlreadyExists, AmbiguousRevision, CkstoreError, IncompleteClone, MissingObject, NotARepository,
                      UnknownRevision, UsageError)
from ..model import naming, revisions
from ..model.metadata import check_schema_spec
from ..model.objects import AliasMove, Commit, FileRecipe, Manifest, Tag, TensorEntry, is_hex
from ..model.progress import NoProgress, Progress
from ..model.refnames import ALIASES, HEADS, NOTES, TAGS, candidates, short
from ..model.crypto import PLAIN, Keyring, Scheme, Sealed
from ..storage.config import NEW_FEATURES, Config
from ..storage.keys import KeyStore, Passphrase, new_key_file, resolve
from ..storage.records import archived_set, dropped_set
from ..storage.leases import Leases
from ..storage.refs import RefStore
from ..storage.signing import signer_from
from ..storage.statcache import StatCache
from ..storage.store import Store
from .restore import select
from .swap import DIRNAME, WORK as MIGRATE_WORK, finish_migration

def encryption_table(keyring: Keyring) -> dict:
    """The config's `encryption` table of a repository under `keyring`."""
    return {"cipher": "aes-256-gcm", "ids": "blake3-keyed", "key_id": keyring.key_id}


LAYOUT = ("refs/heads", "refs/tags", "objects", "packs", "logs", "locks", "tmp", "cache")
# made when first needed: dropped/ (records of commits retention dropped), tombstones/ (gc's first phase)
_MEMO_MAX = 1_000_000
CLONING = "CLONING"  # .ckstore/CLONING: JSON of the clone under way ({"url", "dest", ...}); removed when it is done


class ChunkSource(Protocol):
    """Where the chunks a partial clone lacks come from. Injected by the caller, so the engine never imports
    sync or a transport; `sync.on_demand.OnDemand` is the implementation."""

    def fetch_chunks(self, repo: Repository, chunks: list[bytes], progress: Progress) -> Any:
        """Bring `chunks` into `repo`'s store (verified); returns a report of what moved."""


def find_root(start: str | os.PathLike | None = None) -> Path:
    """The directory holding .ckstore: CKSTORE_DIR, else walking up from `start` (default: cwd)."""
    if start is None and os.environ.get("CKSTORE_DIR"):
        start = os.environ["CKSTORE_DIR"]
        if not (Path(start) / DIRNAME).is_dir():
            raise NotARepository(f"CKSTORE_DIR={start} is not a ckstore repository")
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        if (d / MIGRATE_WORK).is_dir():   # `migrate --encrypt` was killed between its two renames: finish it
            finish_migration(d)
        if (d / DIRNAME / "config").is_file() or (d / DIRNAME / CLONING).is_file():
            return d
    raise NotARepository(f"not a ckstore repository (or any parent up to /): {here}")


def clone_marker(ckdir: Path) -> dict | None:
    """What the CLONING marker of the repository directory `ckdir` records, or None when there is none (an
    unreadable marker reads as {})."""
    try:
        text = (ckdir / CLONING).read_text("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def check_complete(ckdir: Path) -> None:
    """IncompleteClone, naming the command that finishes it, when `ckdir` holds a clone that did not finish."""
    marker = clone_marker(ckdir)
    if marker is None:
        return
    url = str(marker.get("url", "?"))
    dest = str(marker.get("dest") or ckdir.parent)
    raise IncompleteClone(f"{dest} is an incomplete clone of {url}", url,
                          hint=f"run `ckstore clone {shlex.quote(url)} {shlex.quote(dest)}` again to finish it "
                               f"(or remove {shlex.quote(dest)} to give it up)")


class Repository:
    """An open repository. Everything above the storage layer (history rules, sync, the API) works through it."""

    def __init__(self, root: Path, chunk_source: ChunkSource | None = None, *, incomplete_ok: bool = False,
                 passphrase: Passphrase | Keyring = None) -> None:
        self.root = root
        self.dir = root / DIRNAME
        if not incomplete_ok:
            check_complete(self.dir)
        self.config = Config.load(self.dir / "config")
        #: the key file that opened an encrypted repository (None: a plain one)
        self.key_name: str | None = None
        scheme: Scheme = PLAIN
        if self.config.encryption:
            key_id = self.config.encryption["key_id"]
            if isinstance(passphrase, Keyring):            # the master key in hand: a repository just made
                if passphrase.key_id != key_id:
                    raise UsageError(f"repository {root} is encrypted under another master key")
                keyring = passphrase
            else:
                keyring, self.key_name = KeyStore(self.dir).unlock(resolve(passphrase, f"repository {root}"), key_id,
                                                                   f"repository {root}")
            scheme = Sealed(keyring)
        self.refs = RefStore(self.dir, scheme)
        self.refs.audit.signer = signer_from(self.config.governance, root)
        self.store = Store(self.dir, scheme=scheme)
        self.stat_cache = StatCache(self.store.index, scheme)
        self.dropped = dropped_set(self.dir)
        self.archived = archived_set(self.dir)
        self.leases = Leases(self.dir / "locks")
        self.chunk_source = chunk_source
        self.last_fetch: Any = None  # what the chunk source reported for the latest on-demand fetch
        self._pool: ThreadPoolExecutor | None = None
        self._commits: dict[bytes, Commit] = {}

    @classmethod
    def create(cls, path: str | os.PathLike, *, chunk_size: int | None = None,
               required: dict[str, str] | None = None, incomplete_ok: bool = False,
               encrypt: Passphrase | Keyring = None, key_files: dict[str, bytes] | None = None) -> Repository:
        """Make an empty repository at `path` (the config is written last: without it, nothing is a repository).
        `incomplete_ok`: the caller is the clone that wrote `path`'s CLONING marker (else IncompleteClone).
        `encrypt`: an encrypted repository — a passphrase (or a function asking for one) for a new master key and
        its first key file, or the Keyring of the remote a clone copies, with that remote's `key_files`."""
        root = Path(path).resolve()
        d = root / DIRNAME
        if not incomplete_ok:
            check_complete(d)
        if (d / "config").exists():
            raise AlreadyExists(f"{d} already exists", hint="open it instead, or remove it to start over")
        if chunk_size is not None and chunk_size < 4096:
            raise UsageError(f"chunk size {chunk_size} is below the minimum of 4096 bytes")
        keyring = None
        if isinstance(encrypt, Keyring):
            keyring = encrypt
        elif encrypt is not None:
            keyring = Keyring.generate()
            secret = resolve(encrypt, f"the new repository {root}")
        config = Config(chunk_size=chunk_size or Config.chunk_size,
                        schema=check_schema_spec(required) if required else {},
                        encryption=encryption_table(keyring) if keyring else {}, features=NEW_FEATURES)
        for sub in LAYOUT:
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "HEAD").write_text("ref: refs/heads/main\n")
        if keyring is not None:      # key files before the config: a config naming keys nobody has is no repository
            keys = KeyStore(d)
            for name, data in (key_files or {}).items():
                keys.put_raw(name, data)
            made = None if isinstance(encrypt, Keyring) else keys.add(new_key_file(keyring, secret))
        config.save(d / "config", d / "tmp")
        repo = cls(root, incomplete_ok=incomplete_ok, passphrase=keyring)
        if keyring is not None:
            repo.key_name = made
        return repo

    def close(self) -> None:
        """Flush caches and release files and threads."""
        if self._pool:
            self._pool.shutdown()
            self._pool = None
        self.store.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The worker threads for hashing, coding and I/O (started on first use)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="ckstore")
        return self._pool

    # -- commits ------------------------------------------------------------------------------------------------

    def head_branch(self) -> str:
        """The branch HEAD names."""
        return self.refs.head().removeprefix(HEADS)

    def commit(self, oid: bytes) -> Commit:
        """The commit `oid` (memoized: commits are immutable and a history walk asks for each several times)."""
        commit = self._commits.get(oid)
        if commit is None:
            obj = self.store.get_commit_or_object(oid)
            if not isinstance(obj, Commit):
                raise UnknownRevision(f"{oid.hex()} is a {type(obj).__name__.lower()}, not a commit")
            self.remember(oid, obj)
            commit = obj
        return commit

    def remember(self, oid: bytes, commit: Commit) -> None:
        """Memoize a commit this process just wrote, so nothing reads it back."""
        if len(self._commits) >= _MEMO_MAX:
            self._commits.clear()
        self._commits[oid] = commit

    def parents(self, oid: bytes) -> tuple[bytes, ...]:
        """The parents of commit `oid` as history walks see them: a parent retention dropped is replaced by the
        kept commits behind it (its record keeps its parents, so this works after gc deleted it too)."""
        return self.past_dropped(self.commit(oid).parents)

    def past_dropped(self, stored: tuple[bytes, ...]) -> tuple[bytes, ...]:
        """Stored parent ids with each dropped one replaced by the kept commits behind it."""
        if not any(p in self.dropped for p in stored):
            return stored
        out: list[bytes] = []
        seen: set[bytes] = set()
        stack = list(reversed(stored))
        while stack:
            p = stack.pop()
            if p in seen:
                continue
            seen.add(p)
            rec = self.dropped.get(p)
            if rec is None:
                out.append(p)
            else:
                stack.extend(reversed(rec.parents))
        return tuple(out)

    def dropped_parents(self, oid: bytes) -> tuple[bytes, ...]:
        """The parents of `oid` that retention dropped (log says so)."""
        return tuple(p for p in self.commit(oid).parents if p in self.dropped)

    def writing(self, what: str):
        """A writer lease for the block (`with repo.writing("commit"): ...`): gc sweeps nothing meanwhile."""
        return self.leases.writer(what)

    def time_of(self, oid: bytes) -> float:
        """When commit `oid` was made."""
        return self.commit(oid).time

    def peel(self, oid: bytes) -> bytes:
        """The commit an id names: itself, or what an annotated tag points at."""
        obj = self.store.get_commit_or_object(oid)
        while isinstance(obj, (Tag, AliasMove)):
            if obj.target is None:
                raise UnknownRevision(f"alias {obj.name!r} was deleted ({obj.reason})")
            oid = obj.target
            obj = self.store.get_commit_or_object(oid)
        if not isinstance(obj, Commit):
            raise UnknownRevision(f"{oid.hex()} is a {type(obj).__name__.lower()}, not a commit")
        return oid

    def manifest_of(self, oid: bytes) -> Manifest:
        """The manifest of commit `oid`."""
        mid = self.commit(oid).manifest
        obj = self.store.get_object(mid)
        if not isinstance(obj, Manifest):
            raise MissingObject("manifest", mid.hex())
        return obj

    # -- revisions ----------------------------------------------------------------------------------------------

    def resolve(self, rev: str) -> bytes:
        """The commit a revision names: a branch, tag, remote branch, full id or unique prefix (≥ 4 hex digits),
        HEAD, with ~N and ^N suffixes."""
        base, ops = revisions.parse(rev.strip())
        name, at, n = revisions.split_at(base)
        if at == "history":
            oid = self.alias_holder(name, n)
        elif at == "version":
            oid = self.version(name, n)
        else:
            oid = self._base(name)
        return revisions.apply(oid, ops, self.parents, rev)

    def alias_moves(self, name: str) -> list[tuple[bytes, AliasMove]]:
        """The moves of alias `name`, newest first (empty when there is no such alias)."""
        out: list[tuple[bytes, AliasMove]] = []
        cur = self.refs.read(ALIASES + name)
        while cur is not None and len(out) < 1_000_000:
            move = self.store.get_object(cur)
            if not isinstance(move, AliasMove):
                raise UnknownRevision(f"refs/aliases/{name} does not lead to alias moves ({cur.hex()[:12]})")
            out.append((cur, move))
            cur = move.previous
        return out

    def alias_holder(self, name: str, back: int) -> bytes:
        """The commit alias `name` named `back` moves ago (`name@{1}`: the previous holder)."""
        moves = self.alias_moves(name)
        if not moves:
            raise UnknownRevision(f"{name}@{{{back}}}: there is no alias {name!r}")
        if back >= len(moves):
            raise UnknownRevision(f"{name}@{{{back}}}: alias {name!r} has moved only {len(moves) - 1} times")
        move = moves[back][1]
        if move.target is None:
            raise UnknownRevision(f"{name}@{{{back}}}: the alias was deleted then ({move.reason})")
        return move.target

    def first_parent_chain(self, tip: bytes) -> list[bytes]:
        """The commits from `tip` back to the root along stored first parents, oldest first — through commits
        retention dropped too, so a branch's version numbers never change."""
        chain, cur = [], tip
        while cur is not None:
            chain.append(cur)
            rec = self.dropped.get(cur)
            if rec is not None:
                nxt = rec.parents
            else:
                nxt = self.commit(cur).parents
            cur = nxt[0] if nxt else None
        return chain[::-1]

    def version(self, branch: str, n: int) -> bytes:
        """`branch@vN`: the N-th commit of the branch's first-parent history, v1 being its root."""
        tip = self._base(branch)
        chain = self.first_parent_chain(tip)
        if n > len(chain):
            raise UnknownRevision(f"{branch}@v{n}: {branch} has {len(chain)} versions")
        oid = chain[n - 1]
        if oid in self.dropped:
            raise UnknownRevision(f"{branch}@v{n} ({oid.hex()[:12]}) was dropped by retention")
        return oid

    # -- names people can parse ----------------------------------------------------------------------------------

    def describe(self, oid: bytes) -> str:
        """`champion-3-g1a2b3c4`: the nearest alias or tag behind `oid` (aliases first), how far, and the id."""
        named: dict[bytes, list[str]] = {}
        for ref, target in self.commit_refs().items():
            if ref.startswith((ALIASES, TAGS)):
                named.setdefault(target, []).append(ref)
        frontier, seen, distance = [oid], {oid}, 0
        while frontier:
            hits = sorted((not r.startswith(ALIASES), r) for c in frontier for r in named.get(c, ()))
            if hits:
                ref = hits[0][1]
                return naming.describe_name(ref.removeprefix(ALIASES).removeprefix(TAGS), distance, oid)
            nxt = []
            for c in frontier:
                for p in self.parents(c):
                    if p not in seen:
                        seen.add(p)
                        nxt.append(p)
            frontier, distance = nxt, distance + 1
        return naming.describe_name(None, 0, oid)

    def version_of(self, oid: bytes) -> tuple[str, int] | None:
        """(branch, N) such that `branch@vN` is `oid`: HEAD's branch first, then the others by name."""
        try:
            head = self.head_branch()
        except CkstoreError:
            head = None
        branches = sorted(self.refs.list(HEADS), key=lambda r: (r.removeprefix(HEADS) != head, r))
        for ref in branches:
            chain = self.first_parent_chain(self.refs.read(ref))
            if oid in chain:
                return ref.removeprefix(HEADS), chain.index(oid) + 1
        return None

    def artifact_name(self, oid: bytes, record: dict) -> str | None:
        """The commit's name under the config's `governance.name_template` (None without one, or when a field is
        missing); `record` is the commit as CommitInfo.to_dict gives it."""
        template = self.config.governance.get("name_template")
        if not template:
            return None
        at = self.version_of(oid)
        builtin = {"id": oid.hex()[:8], "step": record.get("step")}
        if at:
            builtin.update(branch=at[0], n=at[1])
        return naming.render(template, builtin, record)

    def _named(self, name: str) -> bytes | None:
        """A describe name or an artifact name, resolved (None when `name` is neither)."""
        described = naming.parse_described(name)
        if described is not None:
            oid = self._by_prefix(described[2])
            if self.describe(oid) == name:
                return oid
            raise UnknownRevision(f"{name!r}: {described[2]} is {self.describe(oid)!r} now")
        template = self.config.governance.get("name_template")
        fields = naming.parse(template, name) if template else None
        if fields and fields.get("branch") and (fields.get("n") or "").isdigit():
            oid = self.version(fields["branch"], int(fields["n"]))
            return oid
        return None

    def _base(self, name: str) -> bytes:
        if name == "HEAD" or (name == "latest" and self.refs.read(ALIASES + "latest") is None):
            head = self.refs.head()
            oid = self.refs.read(head)
            if oid is None:
                raise UnknownRevision(f"HEAD ({head}) has no commits yet", hint="commit something first")
            return oid
        low = name.lower()
        if len(low) == 64 and is_hex(low) and self.store.has_object(bytes.fromhex(low)):
            return self.peel(bytes.fromhex(low))  # a full id: one stat, no ref files, no directory listing
        for ref in candidates(name):
            try:
                oid = self.refs.read(ref)
            except UsageError:  # not a valid ref name, so not a ref
                oid = None
            if oid:
                return self.peel(oid)
        if is_hex(low) and 4 <= len(low) < 64:
            return self._by_prefix(low)
        named = self._named(name)
        if named is not None:
            return named
        raise UnknownRevision(f"unknown revision {name!r}")

    def _by_prefix(self, prefix: str) -> bytes:
        found = [oid for oid in self.store.ids_with_prefix(prefix)
                 if isinstance(self.store.get_commit_or_object(oid), (Commit, Tag))]
        if not found:
            raise UnknownRevision(f"unknown revision {prefix!r}")
        if len(found) > 1:
            names = ", ".join(sorted(o.hex()[:12] for o in found))
            raise AmbiguousRevision(f"revision {prefix!r} is ambiguous: {names}")
        return self.peel(found[0])

    def commit_refs(self) -> dict[str, bytes]:
        """Every ref that names a commit (branches, tags, aliases, remote-tracking branches; not notes, nor a
        deleted alias), with the commit it names."""
        out = {}
        for name, oid in self.refs.list().items():
            if name.startswith(NOTES):
                continue
            try:
                out[name] = self.peel(oid)
            except UnknownRevision:
                continue
        return out

    def refs_by_commit(self) -> dict[bytes, list[str]]:
        """Every ref's short name, grouped by the commit it names (refs to damaged objects are left out)."""
        out: dict[bytes, list[str]] = {}
        for name, oid in self.refs.list().items():
            if name.startswith(NOTES):
                continue
            try:
                out.setdefault(self.peel(oid), []).append(short(name))
            except (UnknownRevision, MissingObject):
                continue
        return out

    # -- chunks of partial clones -------------------------------------------------------------------------------

    def ensure_chunks(self, manifest: Manifest, *, files: list[FileRecipe] | None = None,
                      tensors: list[TensorEntry] | None = None, include: list[str] | None = None,
                      progress: Progress | None = None) -> Any:
        """Partial clones: bring in, in one batch, the chunks these files (default: all, or those matching
        `include`) or tensors need and lack here. A full repository has no chunk source and does nothing."""
        if self.chunk_source is None:
            return None
        if tensors is not None:
            wanted = list(dict.fromkeys(c for t in tensors for c in t.chunks))
        else:
            chosen = manifest.files if files is None and not include else (files or select(manifest, include))
            wanted = list(dict.fromkeys(manifest.file_chunks(chosen)))
        have = self.store.index.get_many(wanted)
        missing = [c for c in wanted if c not in have]
        if not missing:
            return None
        self.last_fetch = self.chunk_source.fetch_chunks(self, missing, progress or NoProgress())
        return self.last_fetch
