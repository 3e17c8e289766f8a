"""The Python API: `Repo` opens a repository and offers one documented method per user verb, with typed results.

Everything here is a thin layer over the engine (`ckstore.engine`) and, for remotes, `ckstore.sync`; the plumbing
is reachable as `repo.engine` for tools that need it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

from ..engine import history
from ..engine.capture import read_meta_file
from ..engine.compare import diff_commits
from ..engine.fsck import check
from ..engine.repair import repair
from ..engine.repository import Repository, find_root
from ..engine.restore import checkout as checkout_files
from ..engine.restore import file_pieces, read_tensor, select
from ..errors import UnknownRevision, UsageError
from ..formats.statedict import unflatten
from ..model import graph, metadata
from ..model.diff import Diff, selected
from ..model.objects import Manifest
from ..model.progress import NoProgress, Progress
from ..model.query import compile_query
from ..model.refnames import HEADS, TAGS
from ..results import (
    AuditEntry,
    BranchInfo,
    CommitInfo,
    CommitResult,
    FileInfo,
    FsckReport,
    RepairResult,
    ResetResult,
    metric_value,
    ShowInfo,
    SyncResult,
    TagInfo,
)
from ..storage import remotes
from ..storage.keys import Passphrase
from ..storage.config import Config
from ..storage.remotes import RemoteSpec
from ..model.retention import Policy
from .governance import Governance
from .keys import KeyInfo, Keys  # noqa: F401  (KeyInfo: what key_list returns)
from .lifecycle import Lifecycle
from .queries import Queries, similar  # noqa: F401  (similar: did-you-mean lists for callers)
from .remote_lifecycle import RemoteLifecycle
from .repro import Repro

__all__ = ["Policy", "Repo", "clone", "default_clone_dir", "metric_value", "read_meta_file"]


class Repo(Queries, Lifecycle, RemoteLifecycle, Governance, Repro, Keys):
    """A ckstore repository. Use as a context manager, or call `close()`. The lifecycle verbs (forget, gc, du)
    are in `api.lifecycle`, their remote side (gc_remote, forget_remote, archive, groups) in
    `api.remote_lifecycle`."""

    def __init__(self, engine: Repository) -> None:
        self.engine = engine
        self.root, self.dir = engine.root, engine.dir
        self.last_transfer: SyncResult | None = None  # what the latest push/fetch/pull/clone/on-demand fetch moved

    # -- lifecycle ------------------------------------------------------------------------------------------------

    @classmethod
    def init(cls, path: str | os.PathLike = ".", *, chunk_size: int | None = None,
             required: dict[str, str] | None = None, encrypt: Passphrase = None) -> Repo:
        """Create an empty repository at `path`; `required` names metadata every commit must carry
        (``{"metrics.val_loss": "number"}``). `encrypt`: an encrypted repository under this passphrase (or a
        function asking for one; CKSTORE_PASSWORD* win over it)."""
        return cls(Repository.create(path, chunk_size=chunk_size, required=required, encrypt=encrypt))

    @classmethod
    def open(cls, path: str | os.PathLike | None = None, *, passphrase: Passphrase = None) -> Repo:
        """Open the repository at or above `path` (default: CKSTORE_DIR, else the working directory). An
        encrypted one needs its passphrase: `passphrase`, else CKSTORE_PASSWORD, CKSTORE_PASSWORD_FILE or
        CKSTORE_PASSWORD_COMMAND (a function given is asked only when none of those is set)."""
        engine = Repository(find_root(path), passphrase=passphrase)
        spec = remotes.partial_remote(engine.dir)
        if spec is not None or engine.archived.records():  # only these read through the sync layer
            from ..sync.on_demand import Tiered
            engine.chunk_source = Tiered(spec)
        return cls(engine)

    def close(self) -> None:
        """Flush caches and release files and threads."""
        self.engine.close()

    def __enter__(self) -> Repo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def config(self) -> Config:
        """The repository's settings."""
        return self.engine.config

    @property
    def format_version(self) -> int:
        """The repository format version on disk: 1, 2 for an encrypted repository, 3 for one that names its
        features (docs/design.md, "Version history")."""
        return self.engine.config.version

    # -- revisions ------------------------------------------------------------------------------------------------

    def head_branch(self) -> str:
        """The branch new commits go to by default."""
        return self.engine.head_branch()

    def resolve(self, rev: str = "HEAD") -> str:
        """The full hex id of the commit a revision names: branch, tag, id or prefix, with ~N and ^N."""
        return self.engine.resolve(rev).hex()

    def _info(self, oid: bytes, refs: dict[bytes, list[str]] | None = None,
              notes: dict[bytes, dict] | None = None) -> CommitInfo:
        commit = self.engine.commit(oid)
        history = self.engine.parents(oid)
        return CommitInfo(oid.hex(), commit, tuple((refs or {}).get(oid, ())),
                          history if history != commit.parents else None,
                          self.notes_view.of(oid) if notes is None else notes.get(oid, {}))

    # -- writing --------------------------------------------------------------------------------------------------

    def commit(self, src: str | os.PathLike | dict, message: str = "", *, metrics: dict | None = None,
               params: dict | None = None, meta: dict | None = None, step: int | None = None,
               branch: str | None = None, tag: str | None = None, author: str | None = None,
               capture_env: bool = True, progress: Progress | None = None) -> CommitResult:
        """Snapshot a file, a directory or an in-memory state dict as a new commit on `branch` (default HEAD's).
        A Trainer-style checkpoint directory is committed with what its files say; `meta` may hold any sections
        (metrics, params, data, seeds, extra; unknown keys go to extra)."""
        record = metadata.split_sections(metadata.deep_merge(meta or {}, {
            k: v for k, v in (("metrics", metrics), ("params", params), ("step", step)) if v is not None}))
        done = history.commit(self.engine, src, message, record, branch=branch, tag=tag, author=author,
                              env=capture_env, progress=progress)
        m = done.manifest
        self.sign(done.oid.hex(), "commit")
        self.auto_forget()  # a policy saved with --auto runs after every commit (gc frees the bytes)
        return CommitResult(CommitInfo(done.oid.hex(), done.commit), done.branch, len(m.files), len(m.tensors),
                            m.logical_bytes(), done.new_bytes)

    def revert(self, rev: str, reason: str, *, branch: str | None = None) -> CommitResult:
        """A new commit on `branch` whose checkpoint is `rev`'s, recording why; history is kept, not rewritten."""
        oid, commit, on = history.revert(self.engine, rev, reason, branch=branch)
        self.sign(oid.hex(), "commit")
        m = self.engine.manifest_of(oid)
        return CommitResult(CommitInfo(oid.hex(), commit), on, len(m.files), len(m.tensors), m.logical_bytes(), 0)

    def reset(self, branch: str, rev: str, reason: str, *, force: bool = False) -> ResetResult:
        """Move `branch` to `rev`. Commits that would leave the branch need `force`; tags never move."""
        old, new = history.reset(self.engine, branch, rev, reason, force=force)
        return ResetResult(branch, old.hex() if old else None, new.hex())

    # -- reading --------------------------------------------------------------------------------------------------

    def log(self, rev: str | None = None, *, n: int | None = None, all: bool = False,
            where: str | None = None) -> list[CommitInfo]:
        """Commits reachable from `rev` (default HEAD; `all`: every ref; "A..B": from B but not from A), newest
        first; `where` filters them by a metadata query such as ``metrics.val_loss < 0.3 and params.lr >= 1e-4``."""
        return list(self.iter_log(rev, n=n, all=all, where=where))

    def iter_log(self, rev: str | None = None, *, n: int | None = None, all: bool = False,
                 where: str | None = None) -> Iterator[CommitInfo]:
        """`log`, one commit at a time as the walk reaches it (a long history streams; a bad `rev` or `where`
        raises at the first next())."""
        match = compile_query(where) if where else None
        engine = self.engine
        refs = engine.refs_by_commit()
        hidden: set[bytes] = set()
        if rev is not None and ".." in rev:  # A..B: what B reaches and A does not, as git means it
            a, rev = rev.split("..", 1)
            hidden = graph.ancestors(engine.resolve(a or "HEAD"), engine.parents)
            rev = rev or "HEAD"
        if all:
            starts = list(refs)
        else:
            try:
                starts = [engine.resolve(rev or "HEAD")]
            except UnknownRevision:
                if rev is not None:
                    raise
                starts = []  # a new repository has no history yet
        notes = self.notes_view.by_commit()  # one look at the notes refs for the whole walk

        def parents(oid: bytes) -> tuple[bytes, ...]:
            return tuple(p for p in engine.parents(oid) if p not in hidden)

        found = 0
        try:
            for oid in graph.walk([s for s in starts if s not in hidden], parents, engine.time_of):
                if n is not None and found >= n:
                    break
                info = self._info(oid, refs, notes)
                if match is None or match(info.to_dict()):
                    found += 1
                    yield info
        finally:  # also when the reader stops early (`log --json-lines | head`)
            engine.store.flush_commit_cache()

    def lineage(self, rev: str = "HEAD") -> list[CommitInfo]:
        """The first-parent chain from `rev` back to the root: how this checkpoint came to be."""
        refs = self.engine.refs_by_commit()
        oid: bytes | None = self.engine.resolve(rev)
        out = []
        while oid is not None:
            out.append(self._info(oid, refs))
            parents = self.engine.parents(oid)
            oid = parents[0] if parents else None
        self.engine.store.flush_commit_cache()
        return out

    def manifest(self, rev: str = "HEAD") -> Manifest:
        """The manifest (files and tensors) of `rev`."""
        return self.engine.manifest_of(self.engine.resolve(rev))

    def show(self, rev: str = "HEAD") -> ShowInfo:
        """A commit with its files, tensors and storage figures (logical, stored, and new against its parents)."""
        engine = self.engine
        oid = engine.resolve(rev)
        info = self._info(oid, engine.refs_by_commit())
        manifest = engine.manifest_of(oid)
        locs = engine.store.index.get_many(list(manifest.chunk_ids()))
        stored = sum(loc.length for loc in locs.values())
        parent_chunks: set[bytes] = set()
        for p in engine.parents(oid):  # as history goes: a parent retention dropped may be gone
            parent_chunks |= engine.manifest_of(p).chunk_ids()
        new = sum(loc.length for c, loc in locs.items() if c not in parent_chunks)
        return ShowInfo(info, manifest, manifest.logical_bytes(), stored, new, engine.describe(oid),
                        engine.artifact_name(oid, info.to_dict()))

    def ls(self, rev: str = "HEAD") -> list[FileInfo]:
        """The files of `rev`: path, size and BLAKE3 hash."""
        return [FileInfo(f.path, f.size, f.hash.hex()) for f in self.manifest(rev).files]

    def cat(self, rev: str, path: str) -> Iterator[memoryview]:
        """The bytes of one committed file, in verified pieces."""
        manifest = self.manifest(rev)
        recipe = manifest.file(path)
        if recipe is None:
            raise UnknownRevision(f"{path!r} is not in {rev}", hint=f"see `ckstore ls {rev}`")
        self._fetched(self.engine.ensure_chunks(manifest, files=[recipe]))
        return file_pieces(self.engine.store, manifest, recipe, self.engine.pool)

    def checkout(self, rev: str, dest: str | os.PathLike, *, include: list[str] | None = None,
                 exclude: list[str] | None = None, force: bool = False,
                 progress: Progress | None = None) -> list[str]:
        """Write the files of `rev` under `dest`, byte-identical to what was committed; `include` globs pick
        some, `exclude` globs leave some out. Patterns that leave no file are an error that names the files."""
        manifest = self.manifest(rev)
        chosen = select(manifest, include, exclude)
        if (include or exclude) and not chosen:
            names = ", ".join(f.path for f in manifest.files[:8]) + (" …" if len(manifest.files) > 8 else "")
            given = " ".join([f"--include {g}" for g in include or []] + [f"--exclude {g}" for g in exclude or []])
            raise UsageError(f"{given} matches no file of {rev}", hint=f"its files: {names}")
        progress = progress or NoProgress()
        self._fetched(self.engine.ensure_chunks(manifest, files=chosen, progress=progress))
        progress.begin("checkout", sum(f.size for f in chosen))
        try:
            files = checkout_files(self.engine.store, manifest, Path(dest), self.engine.pool, include=include,
                                   exclude=exclude, force=force, progress=progress.advance)
        finally:
            progress.end()
        return [f.path for f in files]

    def load(self, rev: str = "HEAD", names: list[str] | None = None, framework: str = "numpy") -> dict:
        """Tensors of `rev` as arrays. A committed state dict comes back with its nesting; files give a flat dict
        keyed by tensor name (qualified as "file:name" where two files share a name)."""
        if framework not in ("numpy", "torch"):
            raise UsageError(f"framework must be 'numpy' or 'torch', not {framework!r}")
        manifest = self.manifest(rev)
        store, pool = self.engine.store, self.engine.pool
        by_name = {t.name: t for t in manifest.tensors}
        convert = _to_torch if framework == "torch" else (lambda a: a)
        if manifest.tree is not None and names is None:
            self._fetched(self.engine.ensure_chunks(manifest, tensors=list(manifest.tensors)))
            return unflatten(manifest.tree, lambda name, kind: convert(read_tensor(store, by_name[name], pool)))
        counts: dict[str, int] = {}
        for t in manifest.tensors:
            counts[t.name] = counts.get(t.name, 0) + 1
        keyed = {(t.name if counts[t.name] == 1 else f"{t.file}:{t.name}"): t for t in manifest.tensors}
        if names is not None:
            missing = [n for n in names if n not in keyed]
            if missing:
                raise UsageError(f"no tensor named {missing[0]!r} in {rev}", hint="see `ckstore show` for the names")
            keyed = {n: keyed[n] for n in names}
        self._fetched(self.engine.ensure_chunks(manifest, tensors=list(keyed.values())))
        return {k: convert(read_tensor(store, t, pool)) for k, t in keyed.items()}

    def diff(self, a: str, b: str | None = None, *, tensors: list[str] | None = None, atol: float = 0.0,
             rtol: float = 0.0) -> Diff:
        """What changed from `a` to `b`; with `b` omitted, what `a` changed over its first parent. "A..B" works."""
        engine = self.engine
        if b is None and ".." in a:
            a, b = a.split("..", 1)
        if b is None:
            new_id = engine.resolve(a)
            parents = engine.parents(new_id)
            old_id = parents[0] if parents else None
        else:
            old_id, new_id = engine.resolve(a), engine.resolve(b)
        old = engine.commit(old_id) if old_id else None
        old_m = engine.manifest_of(old_id) if old_id else None
        for m in (old_m, engine.manifest_of(new_id)):  # archived or partial: the compared tensors' data first
            if m is not None:
                self._fetched(engine.ensure_chunks(m, tensors=list(selected(m, tensors).values())))
        return diff_commits(engine.store, engine.pool, old_id, old, old_m, new_id, engine.commit(new_id),
                            engine.manifest_of(new_id), tensors=tensors, atol=atol, rtol=rtol)

    # -- refs -----------------------------------------------------------------------------------------------------

    def branches(self) -> list[BranchInfo]:
        """Every branch, with the one HEAD names marked current."""
        head = self.engine.refs.head()
        return [BranchInfo(n.removeprefix(HEADS), oid.hex(), n == head)
                for n, oid in self.engine.refs.list(HEADS).items()]

    def branch(self, name: str, rev: str = "HEAD", *, force: bool = False) -> BranchInfo:
        """Start branch `name` at `rev`; `force` moves an existing one (audited)."""
        return BranchInfo(name, history.create_branch(self.engine, name, rev, force=force).hex())

    def delete_branch(self, name: str, *, force: bool = False) -> str:
        """Delete a branch; one whose commits no other ref reaches needs `force`. Returns the old tip."""
        return history.delete_branch(self.engine, name, force=force).hex()

    def switch(self, name: str) -> None:
        """Make `name` the branch new commits go to by default (HEAD)."""
        history.switch(self.engine, name)

    def tags(self) -> list[TagInfo]:
        """Every tag with the commit it marks and its message."""
        engine = self.engine
        return [TagInfo(n.removeprefix(TAGS), engine.peel(oid).hex(), history.tag_message(engine, oid))
                for n, oid in engine.refs.list(TAGS).items()]

    def tag(self, name: str, rev: str = "HEAD", *, message: str | None = None) -> str:
        """Tag `rev` as `name` (annotated with `message`); returns the commit id. Tags never move."""
        oid = history.create_tag(self.engine, name, rev, message=message)
        self.sign(self.engine.refs.read(TAGS + name).hex(), "tag")
        return oid.hex()

    def delete_tag(self, name: str) -> str:
        """Delete a tag; returns the id it named (the audit log keeps it too)."""
        return history.delete_tag(self.engine, name).hex()

    def audit(self) -> list[AuditEntry]:
        """The audit log of ref changes, oldest first."""
        return self.engine.refs.audit.entries()

    # -- remotes --------------------------------------------------------------------------------------------------

    def remote_add(self, name: str, url: str, **settings: Any) -> RemoteSpec:
        """Remember a remote under `name` with its transport settings: endpoint_url, region, profile, sse and
        sse_kms_key_id (S3); token_file (a served remote); allow_http and ca_bundle (both)."""
        return remotes.add(self.dir, name, url, **settings)

    def remote_remove(self, name: str) -> RemoteSpec:
        """Forget a remote and its remote-tracking refs (and take it out of its groups); a group's name forgets
        the group (its members stay)."""
        if name in remotes.groups(self.dir):
            members = remotes.remove_group(self.dir, name)
            return RemoteSpec(name, "group:" + ",".join(members))
        from ..sync.pull import remote_remove
        spec = remote_remove(self.engine, name)
        remotes.drop_member(self.dir, name)
        return spec

    def remote_list(self) -> list[RemoteSpec]:
        """The remotes, by name."""
        return list(remotes.load(self.dir).values())

    def push(self, remote: str | None = None, branches: list[str] | None = None, *, all: bool = False,
             tags: bool = False, force: bool = False, progress: Progress | None = None) -> SyncResult:
        """Upload branches (default: HEAD's) and, with `tags`, tags; non-fast-forwards need `force`. A group's
        name pushes to each member and returns a `GroupResult` (one SyncResult per member; a failing member is
        recorded there and the others are still pushed)."""
        from ..sync.push import push
        members = remotes.groups(self.dir).get(remote) if remote else None
        if members is not None:
            from ..sync.groups import push_group
            return push_group(self.engine, remote, members, lambda m: self._fetched(push(
                self.engine, m, branches, all=all, tags=tags, force=force, progress=progress)))
        return self._fetched(push(self.engine, remote, branches, all=all, tags=tags, force=force, progress=progress))

    def fetch(self, remote: str | None = None, *, prune: bool = False,
              progress: Progress | None = None) -> SyncResult:
        """Download the remote's new history; moves refs/remotes/<remote>/*. `prune`: delete those whose branch
        the remote no longer has (audited; reported with status "pruned")."""
        from ..sync.fetch import fetch
        return self._fetched(fetch(self.engine, remote, prune=prune, progress=progress))

    def pull(self, remote: str | None = None, branch: str | None = None, *, force: bool = False,
             merge: bool = False, progress: Progress | None = None) -> SyncResult:
        """Fetch, then fast-forward `branch` (default: HEAD's) to the remote's; `force` resets it (audited);
        `merge` joins a diverged branch with a two-parent commit that keeps our checkpoint."""
        from ..sync.pull import pull
        return self._fetched(pull(self.engine, remote, branch, force=force, merge=merge, progress=progress))

    def _fetched(self, result: Any) -> Any:
        if result is not None:
            self.last_transfer = result
        return result

    # -- integrity ------------------------------------------------------------------------------------------------

    def fsck(self, *, read_data: bool = False, reindex: bool = False, remote: str | None = None,
             progress: Progress | None = None) -> FsckReport:
        """Verify the repository (`read_data`: decode and hash every chunk, check every cache entry); `reindex`
        rebuilds the LMDB index from the packs' index files first. With `remote`, check that remote instead."""
        if remote is not None:
            from ..sync.check import check_remote
            members = remotes.groups(self.dir).get(remote)
            if members is not None:  # a group: each member
                from ..sync.groups import check_group
                return check_group(members, lambda m: check_remote(self.engine, m, read_data=read_data,
                                                                   progress=progress or NoProgress()))
            return check_remote(self.engine, remote, read_data=read_data, progress=progress or NoProgress())
        if reindex:
            self.engine.store.reindex()
        report = check(self.engine, read_data=read_data, progress=progress or NoProgress())
        if self.engine.config.governance.get("allowed_signers") or self.engine.refs.audit.signer:
            from ..results import Problem
            chain = set(self.engine.refs.audit.verify())  # fsck lists these already
            report.problems += [Problem("signature", "", p) for p in self.verify_signatures() if p not in chain]
        return report

    def repair(self, *, source: str | None = None, progress: Progress | None = None) -> RepairResult:
        """Repair the repository: rebuild its caches, move damaged packs and objects to `.ckstore/quarantine/`
        after copying out every frame that still verifies, and re-fetch what is then missing from the remote
        `source` (verified). The result holds the fsck reports before and after."""
        progress = progress or NoProgress()
        refetch = None
        if source is not None:
            from ..sync.repair import refetch as from_remote
            spec = remotes.get(self.dir, source)

            def refetch(chunks: list[bytes], objects: list[bytes]) -> tuple[int, int]:
                return from_remote(self.engine, spec, chunks, objects, progress)
        return repair(self.engine, progress, refetch)


def _to_torch(arr: Any) -> Any:
    import numpy as np
    import torch  # only when the caller asked for torch tensors
    special = {"bfloat16": (np.int16, torch.bfloat16), "float8_e4m3fn": (np.uint8, torch.float8_e4m3fn),
               "float8_e5m2": (np.uint8, torch.float8_e5m2), "float8_e8m0fnu": (np.uint8, torch.float8_e8m0fnu)}
    shape = arr.shape  # torch.from_numpy keeps 0-d arrays 0-d; ascontiguousarray would make them 1-d
    if arr.dtype.name in special:
        raw, target = special[arr.dtype.name]
        return torch.from_numpy(np.ascontiguousarray(arr).view(raw).reshape(shape)).view(target)
    return torch.from_numpy(np.ascontiguousarray(arr).reshape(shape))


def default_clone_dir(url: str) -> str:
    """The directory a clone of `url` goes to when none is given."""
    from ..sync.pull import default_clone_dir as name_for
    return name_for(url)


def clone(url: str, dest: str | os.PathLike | None = None, **options: Any) -> Repo:
    """Clone a remote into a new repository at `dest` (default: named after the URL); options: filter,
    metadata_only, depth (only the newest N commits' data of each branch; older on demand), name, progress, the
    remote's transport settings as for `Repo.remote_add`, checkout (a new or empty directory: the checked-out branch's files are written there while the
    data arrives, verified as `checkout` does). `repo.last_transfer` says what moved."""
    from ..sync.pull import clone as clone_remote
    engine, result = clone_remote(url, dest, **options)
    repo = Repo(engine)
    repo.last_transfer = result
    return repo
